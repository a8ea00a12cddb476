/* libFuzzer: the event file loader (common/eventfile.h) on any bytes: it
 * accepts or names the offending field, and never leaks either way. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "eventfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct eventfile ef;
    memset(&ef, 0, sizeof(ef));
    char err[256] = "";
    if (eventfile_parse((const char *)data, size, &ef, err, sizeof(err)))
        eventfile_free(&ef);
    else if (err[0] == '\0')
        abort(); /* a refusal always says why */
    return 0;
}
