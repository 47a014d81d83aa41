/* graft-broker: entry point. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--version"))) {
        printf("graft-broker %s\n", GRAFT_VERSION);
        return 0;
    }
    fprintf(stderr, "usage: graft-broker --bind tcp://*:5555 --redis URL\n");
    return 2;
}
