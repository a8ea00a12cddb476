/* livetally-loadtest: options, then the run (loadrun.c). */
#include "loadopts.h"
#include "loadrun.h"

int main(int argc, char **argv)
{
    struct loadopts o;
    switch (loadopts_parse(argc, argv, &o)) {
    case CLI_EXIT_OK: return 0;
    case CLI_EXIT_USAGE: return 2;
    case CLI_CONTINUE: break;
    }
    return loadrun(&o);
}
