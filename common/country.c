#include "country.h"

#include <string.h>

/* ISO 3166-1 alpha-2, every officially assigned code (249), sorted so
 * lookups can bisect; "unknown" is appended last as COUNTRY_UNKNOWN. The
 * length is pinned by the static assertion below and by a unit test. */
static const char *const codes[] = {
    "ad", "ae", "af", "ag", "ai", "al", "am", "ao", "aq", "ar", "as", "at",
    "au", "aw", "ax", "az", "ba", "bb", "bd", "be", "bf", "bg", "bh", "bi",
    "bj", "bl", "bm", "bn", "bo", "bq", "br", "bs", "bt", "bv", "bw", "by",
    "bz", "ca", "cc", "cd", "cf", "cg", "ch", "ci", "ck", "cl", "cm", "cn",
    "co", "cr", "cu", "cv", "cw", "cx", "cy", "cz", "de", "dj", "dk", "dm",
    "do", "dz", "ec", "ee", "eg", "eh", "er", "es", "et", "fi", "fj", "fk",
    "fm", "fo", "fr", "ga", "gb", "gd", "ge", "gf", "gg", "gh", "gi", "gl",
    "gm", "gn", "gp", "gq", "gr", "gs", "gt", "gu", "gw", "gy", "hk", "hm",
    "hn", "hr", "ht", "hu", "id", "ie", "il", "im", "in", "io", "iq", "ir",
    "is", "it", "je", "jm", "jo", "jp", "ke", "kg", "kh", "ki", "km", "kn",
    "kp", "kr", "kw", "ky", "kz", "la", "lb", "lc", "li", "lk", "lr", "ls",
    "lt", "lu", "lv", "ly", "ma", "mc", "md", "me", "mf", "mg", "mh", "mk",
    "ml", "mm", "mn", "mo", "mp", "mq", "mr", "ms", "mt", "mu", "mv", "mw",
    "mx", "my", "mz", "na", "nc", "ne", "nf", "ng", "ni", "nl", "no", "np",
    "nr", "nu", "nz", "om", "pa", "pe", "pf", "pg", "ph", "pk", "pl", "pm",
    "pn", "pr", "ps", "pt", "pw", "py", "qa", "re", "ro", "rs", "ru", "rw",
    "sa", "sb", "sc", "sd", "se", "sg", "sh", "si", "sj", "sk", "sl", "sm",
    "sn", "so", "sr", "ss", "st", "sv", "sx", "sy", "sz", "tc", "td", "tf",
    "tg", "th", "tj", "tk", "tl", "tm", "tn", "to", "tr", "tt", "tv", "tw",
    "tz", "ua", "ug", "um", "us", "uy", "uz", "va", "vc", "ve", "vg", "vi",
    "vn", "vu", "wf", "ws", "ye", "yt", "za", "zm", "zw",
    "unknown",
};

_Static_assert(sizeof(codes) / sizeof(codes[0]) == COUNTRY_COUNT, "country table size");

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool is_unknown(const char *code, size_t len)
{
    static const char word[] = "unknown";
    if (len != sizeof(word) - 1)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (lower(code[i]) != word[i])
            return false;
    }
    return true;
}

int country_lookup_strict(const char *code, size_t len)
{
    if (code == NULL)
        return -1;
    if (is_unknown(code, len))
        return COUNTRY_UNKNOWN;
    if (len != 2)
        return -1;
    char cc[2] = {lower(code[0]), lower(code[1])};
    if (cc[0] < 'a' || cc[0] > 'z' || cc[1] < 'a' || cc[1] > 'z')
        return -1;
    /* The United Kingdom's own domain and common usage, reserved by ISO for it. */
    if (cc[0] == 'u' && cc[1] == 'k') {
        cc[0] = 'g';
        cc[1] = 'b';
    }

    int lo = 0;
    int hi = COUNTRY_UNKNOWN - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int d = memcmp(cc, codes[mid], 2);
        if (d == 0)
            return mid;
        if (d < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

int country_lookup(const char *code, size_t len)
{
    int i = country_lookup_strict(code, len);
    return i < 0 ? COUNTRY_UNKNOWN : i;
}

const char *country_code(int index)
{
    if (index < 0 || index >= COUNTRY_COUNT)
        return NULL;
    return codes[index];
}
