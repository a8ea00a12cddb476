#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "page.h"

static void test_page_assets(void **state)
{
    (void)state;
    const struct page_asset *html = page_find("/");
    assert_non_null(html);
    assert_ptr_equal(page_find("/index.html"), html);
    assert_string_equal(html->content_type, "text/html; charset=utf-8");
    assert_true(html->len > 100);
    assert_non_null(strstr((const char *)html->data, "<script src=\"app.js\""));
    assert_int_equal(html->data[html->len], 0);
    const struct page_asset *js = page_find("/app.js");
    assert_non_null(js);
    assert_string_equal(js->content_type, "text/javascript; charset=utf-8");
    const struct page_asset *css = page_find("/style.css");
    assert_non_null(css);
    assert_string_equal(css->content_type, "text/css; charset=utf-8");
    assert_int_equal(strlen(css->etag), 18); /* quoted 16 hex digits */
    assert_true(css->etag[0] == '"' && css->etag[17] == '"');
    assert_string_not_equal(css->etag, js->etag);
    assert_null(page_find("/nope.js"));
    assert_null(page_find("/app.js/"));
    assert_null(page_find(""));
    const struct page_asset *icon = page_find("/favicon.svg");
    assert_non_null(icon);
    assert_string_equal(icon->content_type, "image/svg+xml");
    /* Self-contained: nothing on the page names another host. The SVG
     * namespace is a name, never fetched: the only URL allowed. */
    static const char svg_ns[] = "xmlns=\"http://www.w3.org/2000/svg\"";
    for (size_t i = 0; i < page_assets_count; i++) {
        const char *text = (const char *)page_assets[i].data;
        const char *ns = strstr(text, svg_ns);
        if (ns != NULL)
            text = ns + sizeof(svg_ns) - 1; /* the namespace comes first in the file */
        assert_null(strstr(text, "http://"));
        assert_null(strstr(text, "https://"));
        assert_null(strstr(text, "//cdn"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_assets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
