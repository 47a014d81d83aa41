/* graft-worker: entry point. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--version"))) {
        printf("graft-worker %s\n", GRAFT_VERSION);
        return 0;
    }
    fprintf(stderr, "usage: graft-worker --broker tcp://HOST:5555 --ops a,b,c --store DIR\n");
    return 2;
}
