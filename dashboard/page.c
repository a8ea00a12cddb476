/* A deliberately small page: polls /v1/stats every second and renders it. */
#include "page.h"

#define PAGE                                                                                       \
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"                          \
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"                   \
    "<title>livetally</title>\n"                                                                   \
    "<style>body{font-family:system-ui,sans-serif;margin:1.5em;background:#111;color:#eee}"        \
    "table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #333;"          \
    "text-align:right}th:first-child,td:first-child{text-align:left}.bar{background:#2a2;height:"  \
    ".6em}#age{color:#999}</style></head><body>\n"                                                 \
    "<h1>livetally <small id=\"event\"></small></h1>\n"                                            \
    "<p id=\"totals\">waiting for the first snapshot&hellip;</p>\n"                               \
    "<table><thead><tr><th>question</th><th>state</th><th>answers</th><th>right</th>"             \
    "<th>wrong</th><th>right %</th><th>best country</th></tr></thead><tbody id=\"qs\"></tbody>"   \
    "</table>\n<p id=\"age\"></p>\n"                                                               \
    "<script>\n"                                                                                   \
    "function esc(s){return String(s).replace(/[&<>\"]/g,function(c){return "                     \
    "{'&':'&amp;','<':'&lt;','>':'&gt;','\"':'&quot;'}[c];});}\n"                                  \
    "function show(s){document.getElementById('event').textContent=s.event;"                       \
    "document.getElementById('totals').textContent='answers '+s.totals.answers+' \\u00b7 right '+" \
    "s.totals.right+' \\u00b7 wrong '+s.totals.wrong;var h='';s.questions.forEach(function(q){"     \
    "var b=q.best_country?q.best_country.country+' ('+Math.round(q.best_country.right_ratio*100)+" \
    "'%)':'-';h+='<tr><td>'+esc(q.id+'. '+(q.text||''))+'</td><td>'+esc(q.state)+'</td><td>'+"      \
    "q.answers+'</td><td>'+q.right+'</td><td>'+q.wrong+'</td><td>'+Math.round(q.right_ratio*100)+" \
    "'</td><td>'+esc(b)+'</td></tr>';});document.getElementById('qs').innerHTML=h;"                \
    "document.getElementById('age').textContent='generation '+s.generation+' at '+"               \
    "s.generated_at;}\n"                                                                           \
    "function poll(){fetch('/v1/stats').then(function(r){return r.ok?r.json():null;})"             \
    ".then(function(s){if(s)show(s);}).catch(function(){}).finally(function(){"                    \
    "setTimeout(poll,1000);});}\npoll();\n</script></body></html>\n"

const char page_html[] = PAGE;
const size_t page_html_len = sizeof(PAGE) - 1;
