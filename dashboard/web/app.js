/* livetally dashboard: renders each snapshot of /v1/stats.
 *
 * Snapshots arrive over Server-Sent Events (v1/stats/stream, event "stats");
 * where the stream cannot be opened (an old proxy, a server at its stream
 * limit) the page polls v1/stats every interval instead. Every figure is
 * written into the DOM twice: as text for people and as a data-* attribute
 * holding the exact number, for scripts and tests.
 *
 * Nothing is fetched from anywhere but this server, and text from the
 * snapshot is only ever set as textContent. */
'use strict';

(function () {
  var $ = function (id) { return document.getElementById(id); };
  var numberFormat = new Intl.NumberFormat('en-US');
  var params = new URLSearchParams(window.location.search);

  var state = {
    intervalMs: 1000,
    staleAfterMs: 3000,
    skewMs: 0,          /* server clock minus this screen's clock */
    minAnswers: null,
    last: null,         /* the snapshot on screen */
    samples: [],        /* [{t: generated_at ms, n: total answers}] for answers/s */
    burst: [],          /* [{t, rate}] between consecutive snapshots, the last BURST_MS */
    source: null,       /* EventSource */
    pollTimer: null,
    retryTimer: null
  };

  function fmt(n) { return typeof n === 'number' ? numberFormat.format(n) : '–'; }
  function pct(r) { return typeof r === 'number' ? (Math.round(r * 1000) / 10).toFixed(1) + '%' : '–'; }

  function setNum(node, value, text) {
    node.dataset.value = value === null || value === undefined ? '' : String(value);
    node.textContent = text !== undefined ? text : fmt(value);
  }

  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /* ---- flags: regional indicator symbols from the ISO code -------------- */

  /* Without an emoji font a flag is two boxed letters: then show the code
   * alone. A font that has flags draws the pair as one glyph, about as wide
   * as one indicator; without one, two glyphs side by side. */
  function flagsRender() {
    try {
      var ctx = document.createElement('canvas').getContext('2d');
      ctx.font = '32px sans-serif';
      var one = ctx.measureText('\uD83C\uDDEC').width;
      var pair = ctx.measureText('\uD83C\uDDEC\uD83C\uDDE7').width;
      return pair > 0 && pair < one * 1.5;
    } catch (e) {
      return false;
    }
  }

  function flagOf(code) {
    if (!/^[a-z]{2}$/.test(code)) return '\uD83C\uDF10'; /* globe: unknown */
    return String.fromCodePoint(0x1F1E6 + code.charCodeAt(0) - 97,
                                0x1F1E6 + code.charCodeAt(1) - 97);
  }

  function countryNode(code) {
    var span = make('span', 'country');
    var flag = make('span', 'flag', flagOf(code));
    flag.setAttribute('aria-hidden', 'true');
    span.appendChild(flag);
    span.appendChild(make('span', 'code', code === 'unknown' ? '?' : code));
    span.title = code;
    return span;
  }

  /* ---- which question is "current" -------------------------------------- */

  /* The open one (the most recently opened if several), else the one closed
   * last, else the first. ISO 8601 timestamps compare as strings. */
  function currentQuestion(s) {
    var pick = null;
    s.questions.forEach(function (q) {
      if (q.state === 'open' && (!pick || (q.opened_at || '') > (pick.opened_at || ''))) pick = q;
    });
    if (pick) return pick;
    s.questions.forEach(function (q) {
      if (q.state === 'closed' && (!pick || (q.closed_at || '') >= (pick.closed_at || ''))) pick = q;
    });
    return pick || s.questions[0] || null;
  }

  /* ---- rendering --------------------------------------------------------- */

  function renderBars(list, rows) {
    list.replaceChildren();
    rows.forEach(function (r) {
      var li = make('li', r.className || '');
      Object.keys(r.data).forEach(function (k) { li.dataset[k] = String(r.data[k]); });
      var label = make('span', 'label');
      if (r.labelNode) label.appendChild(r.labelNode); else label.textContent = r.label;
      label.title = r.label || '';
      var track = make('span', 'track');
      r.fills.forEach(function (f) {
        var fill = make('span', 'fill ' + (f.className || ''));
        fill.style.width = (Math.max(0, Math.min(1, f.share)) * 100).toFixed(2) + '%';
        track.appendChild(fill);
      });
      li.appendChild(label);
      li.appendChild(track);
      li.appendChild(make('span', 'num', r.num));
      list.appendChild(li);
    });
  }

  function renderCurrent(q) {
    var card = $('current');
    if (!q) {
      card.dataset.qid = '';
      return;
    }
    card.dataset.qid = String(q.id);
    card.dataset.state = q.state;
    $('current-label').textContent = 'Question ' + q.id;
    var st = $('current-state');
    st.textContent = q.state.replace('_', ' ');
    st.className = 'state ' + q.state;
    $('current-text').textContent = q.text || '';
    setNum($('current-answers'), q.answers);
    setNum($('current-right'), q.right);
    setNum($('current-wrong'), q.wrong);
    setNum($('current-ratio'), q.right_ratio, q.answers ? pct(q.right_ratio) : '–');
    var share = q.answers ? q.right / q.answers : 0;
    $('current-bar-right').style.width = (share * 100).toFixed(2) + '%';
    $('current-bar-wrong').style.width = (q.answers ? (1 - share) * 100 : 0).toFixed(2) + '%';

    var most = Math.max.apply(null, [1].concat(q.by_answer || []));
    renderBars($('options'), (q.by_answer || []).map(function (n, k) {
      var correct = typeof q.correct === 'number' && q.correct === k;
      return {
        className: correct ? 'option correct' : 'option',
        data: { option: k, count: n, correct: correct ? 1 : 0 },
        label: (q.options && q.options[k] !== undefined) ? q.options[k] : 'option ' + (k + 1),
        fills: [{ share: n / most, className: typeof q.correct === 'number' ? (correct ? 'right' : 'wrong') : '' }],
        num: fmt(n) + (q.answers ? ' · ' + pct(n / q.answers) : '')
      };
    }));

    renderBars($('ages'), (q.by_age || []).map(function (a) {
      return {
        className: 'age',
        data: { bucket: a.bucket, answers: a.answers, right: a.right, wrong: a.wrong },
        label: a.label,
        fills: [
          { share: a.answers ? a.right / a.answers : 0, className: 'right' },
          { share: a.answers ? a.wrong / a.answers : 0, className: 'wrong' }
        ],
        num: fmt(a.answers) + ' · ' + (a.answers ? pct(a.right / a.answers) : '–') + ' right'
      };
    }));

    var best = $('best-country');
    best.replaceChildren();
    if (q.best_country) {
      best.dataset.country = q.best_country.country;
      best.dataset.ratio = String(q.best_country.right_ratio);
      best.dataset.answers = String(q.best_country.answers);
      best.appendChild(countryNode(q.best_country.country));
      best.appendChild(make('span', 'ratio', ' ' + pct(q.best_country.right_ratio)));
    } else {
      best.dataset.country = '';
      best.dataset.ratio = '';
      best.dataset.answers = '';
      best.textContent = '–';
    }
  }

  function renderCountries(s) {
    var list = $('countries');
    list.replaceChildren();
    (s.countries || []).slice(0, 10).forEach(function (c, i) {
      var li = make('li', 'country-row');
      li.dataset.rank = String(i + 1);
      li.dataset.country = c.country;
      li.dataset.answers = String(c.answers);
      li.dataset.right = String(c.right);
      li.dataset.ratio = String(c.right_ratio);
      li.appendChild(countryNode(c.country));
      li.appendChild(make('span', 'ratio', pct(c.right_ratio)));
      li.appendChild(make('span', 'num', fmt(c.answers) + ' answers'));
      list.appendChild(li);
    });
    if (!list.children.length) {
      list.appendChild(make('li', 'empty', 'no country has enough answers yet'));
    }
  }

  function renderQuestions(s, current) {
    var body = $('questions');
    body.replaceChildren();
    s.questions.forEach(function (q) {
      var tr = make('tr', current && q.id === current.id ? 'is-current' : '');
      tr.dataset.qid = String(q.id);
      tr.dataset.state = q.state;
      tr.dataset.answers = String(q.answers);
      tr.dataset.right = String(q.right);
      tr.dataset.wrong = String(q.wrong);
      tr.dataset.ratio = String(q.right_ratio);
      tr.appendChild(make('td', '', String(q.id)));
      var text = make('td', 'qcol', q.text || '');
      text.title = q.text || '';
      tr.appendChild(text);
      tr.appendChild(make('td', 'state-cell', q.state.replace('_', ' ')));
      tr.appendChild(make('td', 'answers', fmt(q.answers)));
      var cell = make('td');
      var wrap = make('span', 'ratio-cell');
      var mini = make('span', q.answers ? 'mini' : 'mini empty');
      var fill = make('span');
      fill.style.width = (q.answers ? q.right / q.answers * 100 : 0).toFixed(2) + '%';
      mini.appendChild(fill);
      wrap.appendChild(mini);
      wrap.appendChild(make('span', 'ratio', q.answers ? pct(q.right_ratio) : '–'));
      cell.appendChild(wrap);
      tr.appendChild(cell);
      body.appendChild(tr);
    });
  }

  function renderFans(s) {
    var fans = s.ultimate_fans || [];
    $('fans-card').hidden = fans.length === 0;
    var list = $('fans');
    list.replaceChildren();
    fans.forEach(function (f) {
      var li = make('li', 'fan');
      li.dataset.rank = String(f.rank);
      li.dataset.user = f.user;
      li.dataset.right = String(f.right);
      li.dataset.totalMs = String(f.total_ms);
      li.appendChild(make('span', 'user', f.user));
      li.appendChild(make('span', 'num', f.right + ' right · ' + (f.total_ms / 1000).toFixed(1) + ' s'));
      list.appendChild(li);
    });
  }

  /* answers/s over the last ~10 s of snapshots, by the aggregator's clock. */
  function updateRate(s) {
    var t = Date.parse(s.generated_at);
    var n = s.totals.answers;
    var samples = state.samples;
    if (samples.length && (n < samples[samples.length - 1].n || t <= samples[samples.length - 1].t)) {
      if (n < samples[samples.length - 1].n) samples.length = 0; /* another event or a restart */
      else return;
    }
    samples.push({ t: t, n: n });
    while (samples.length > 2 && t - samples[1].t >= 10000) samples.shift();
    var rate = null;
    if (samples.length >= 2) {
      var first = samples[0];
      rate = Math.round((n - first.n) / ((t - first.t) / 1000));
    }
    setNum($('rate'), rate);
  }

  /* The burst chart: answers per second between consecutive snapshots over
   * the last BURST_MS, from what this page received (no history kept by the
   * server), drawn as one SVG polyline scaled to its peak. */
  var BURST_MS = 5 * 60 * 1000;
  function updateBurst(s) {
    var t = Date.parse(s.generated_at), n = s.totals.answers;
    var prev = state.burstPrev;
    state.burstPrev = { t: t, n: n };
    if (!prev || t <= prev.t) return;
    if (n < prev.n) { state.burst.length = 0; return; } /* another event, or a restart */
    state.burst.push({ t: t, rate: (n - prev.n) / ((t - prev.t) / 1000) });
    while (state.burst.length && t - state.burst[0].t > BURST_MS) state.burst.shift();
    var peak = 0;
    state.burst.forEach(function (p) { if (p.rate > peak) peak = p.rate; });
    var pts = state.burst.map(function (p) {
      var x = 300 - (t - p.t) / BURST_MS * 300;
      var y = 78 - (peak > 0 ? p.rate / peak * 74 : 0);
      return x.toFixed(1) + ',' + y.toFixed(1);
    });
    $('burst-line').setAttribute('points', pts.join(' '));
    var svg = $('burst');
    svg.dataset.points = String(pts.length);
    svg.dataset.peak = String(Math.round(peak));
    setNum($('burst-peak'), Math.round(peak));
  }

  /* How long the question on screen has been open (or was), by the
   * server's clock: the answer window as the audience lives it. */
  function mmss(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var m = Math.floor(s / 60);
    return m + ':' + (s % 60 < 10 ? '0' : '') + (s % 60);
  }
  function updateTimer() {
    var node = $('current-timer');
    var q = state.last ? currentQuestion(state.last) : null;
    var opened = q && q.opened_at ? Date.parse(q.opened_at) : NaN;
    if (!q || isNaN(opened)) {
      node.textContent = '';
      node.dataset.openMs = '';
      return;
    }
    var closed = q.closed_at ? Date.parse(q.closed_at) : NaN;
    var now = Date.now() + state.skewMs;
    var ms = (isNaN(closed) ? now : closed) - opened;
    node.dataset.openMs = String(Math.max(0, Math.round(ms)));
    node.dataset.closedMs = isNaN(closed) ? '' : String(closed);
    node.textContent = isNaN(closed) ? 'open for ' + mmss(ms) : 'was open ' + mmss(ms);
  }

  /* The snapshot's warnings (a store node lost or back empty, counters that
   * went backwards) and its failed checks. A check fails now and then while
   * answers flow (the reads are not one atomic snapshot), so only one that
   * failed in CHECKS_SHOWN_AFTER snapshots in a row is shown. */
  var CHECKS_SHOWN_AFTER = 3, ALERTS_SHOWN = 4;
  function renderAlerts(s) {
    var lines = Array.isArray(s.warnings) ? s.warnings.slice() : [];
    var failed = s.checks && s.checks.ok === false;
    state.checkFails = failed ? (state.checkFails || 0) + 1 : 0;
    if (state.checkFails >= CHECKS_SHOWN_AFTER) {
      var m = (s.checks.mismatches || [])[0];
      lines.push('breakdowns do not add up (' + s.checks.mismatch_count + ' mismatches' +
                 (m ? ', e.g. question ' + m.question + ' ' + m.check + ': ' + m.actual +
                      ' of ' + m.expected : '') + ')');
    }
    var list = $('alert-list');
    list.textContent = '';
    lines.slice(0, ALERTS_SHOWN).forEach(function (t) { list.appendChild(make('li', '', t)); });
    if (lines.length > ALERTS_SHOWN)
      list.appendChild(make('li', 'more', '… and ' + (lines.length - ALERTS_SHOWN) + ' more'));
    var box = $('alerts');
    box.dataset.count = String(lines.length);
    box.hidden = lines.length === 0;
  }

  function render(s) {
    document.title = 'livetally · ' + s.event;
    $('event').textContent = s.event;
    setNum($('total-answers'), s.totals.answers);
    setNum($('total-right'), s.totals.right);
    setNum($('total-wrong'), s.totals.wrong);
    setNum($('generation'), s.generation);
    var current = currentQuestion(s);
    renderCurrent(current);
    renderCountries(s);
    renderQuestions(s, current);
    renderFans(s);
    renderAlerts(s);
    updateRate(s);
    updateBurst(s);
    updateFreshness();
    updateTimer();
    document.body.dataset.ready = '1';
  }

  function onSnapshot(s) {
    if (!s || !Array.isArray(s.questions) || !s.totals) return;
    var last = state.last;
    if (last && last.event === s.event && s.generation <= last.generation) return;
    state.last = s;
    render(s);
  }

  /* ---- freshness --------------------------------------------------------- */

  function updateFreshness() {
    var node = $('freshness');
    if (!state.last) return;
    var at = Date.parse(state.last.generated_at);
    var age = Math.max(0, Date.now() + state.skewMs - at);
    var stale = age > state.staleAfterMs;
    node.dataset.ageMs = String(Math.round(age));
    node.dataset.stale = stale ? '1' : '0';
    var secs = Math.floor(age / 1000);
    var text = secs < 1 ? 'updated just now'
      : secs < 120 ? 'updated ' + secs + ' s ago'
      : 'updated ' + Math.floor(secs / 60) + ' min ago';
    node.textContent = stale ? text + ' — no new data' : text;
  }

  /* ---- transport --------------------------------------------------------- */

  function setMode(mode) {
    document.body.dataset.mode = mode;
    var node = $('mode');
    node.dataset.mode = mode;
    node.textContent = mode === 'stream' ? 'live (stream)' : mode === 'polling' ? 'live (polling)' : mode;
  }

  function fetchStats() {
    return fetch('v1/stats', { cache: 'no-store' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(onSnapshot)
      .catch(function () { /* the freshness indicator shows it */ });
  }

  function startPolling(retryStream) {
    if (state.pollTimer) return;
    setMode('polling');
    state.pollTimer = setInterval(fetchStats, state.intervalMs);
    /* Try the stream again now and then: the limit or the proxy may be gone. */
    if (retryStream !== false && !state.retryTimer) {
      state.retryTimer = setTimeout(function () { state.retryTimer = null; startStream(); }, 30000);
    }
  }

  function stopPolling() {
    if (state.pollTimer) clearInterval(state.pollTimer);
    state.pollTimer = null;
  }

  function startStream() {
    if (!window.EventSource) { startPolling(); return; }
    var es = new EventSource('v1/stats/stream');
    state.source = es;
    es.addEventListener('open', function () { stopPolling(); setMode('stream'); });
    es.addEventListener('stats', function (e) {
      try { onSnapshot(JSON.parse(e.data)); } catch (err) { /* a bad event: wait for the next */ }
    });
    es.addEventListener('error', function () {
      /* CONNECTING: the browser retries by itself. CLOSED: it gave up
       * (e.g. 503 at the stream limit): poll instead. */
      if (es.readyState === EventSource.CLOSED) {
        state.source = null;
        startPolling();
      } else {
        setMode('reconnecting');
      }
    });
  }

  function loadConfig() {
    var sent = Date.now();
    return fetch('v1/dashboard/config', { cache: 'no-store' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (c) {
        if (!c) return;
        var now = Date.now();
        if (c.interval_ms > 0) state.intervalMs = c.interval_ms;
        if (c.stale_after_ms > 0) state.staleAfterMs = c.stale_after_ms;
        if (typeof c.server_time_ms === 'number') state.skewMs = c.server_time_ms - (sent + now) / 2;
      })
      .catch(function () { /* defaults */ });
  }

  function start() {
    if (params.get('screen') === '1') document.documentElement.classList.add('screen');
    if (!flagsRender()) document.body.classList.add('no-emoji');
    setMode('connecting');
    loadConfig().then(function () {
      fetchStats();
      /* ?transport=poll: for networks that break long responses. */
      if (params.get('transport') === 'poll') startPolling(false);
      else startStream();
    });
    setInterval(function () { updateFreshness(); updateTimer(); }, 500);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
