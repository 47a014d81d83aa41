/* graft: the user's command-line interface. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--version"))) {
        printf("graft %s\n", GRAFT_VERSION);
        return 0;
    }
    fprintf(stderr, "usage: graft COMMAND ...\n");
    return 2;
}
