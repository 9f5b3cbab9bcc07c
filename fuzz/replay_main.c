/*
 * replay_main.c - runs a libFuzzer target over every file of a corpus
 * directory (or over the files named), so that the corpus is replayed as a
 * regression test by ctest in builds without libFuzzer.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;

    if (!f) {
        perror(path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n)) {
        fclose(f);
        free(buf);
        fprintf(stderr, "%s: cannot read\n", path);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int i, count = 0;

    for (i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            perror(argv[i]);
            return 1;
        }
        if (S_ISDIR(st.st_mode)) {
            struct dirent **list;
            int k, n = scandir(argv[i], &list, NULL, alphasort);
            if (n < 0) {
                perror(argv[i]);
                return 1;
            }
            for (k = 0; k < n; k++) {
                char path[4096];
                if (list[k]->d_name[0] != '.') {
                    snprintf(path, sizeof(path), "%s/%s", argv[i], list[k]->d_name);
                    if (run_file(path) < 0)
                        return 1;
                    count++;
                }
                free(list[k]);
            }
            free(list);
        } else {
            if (run_file(argv[i]) < 0)
                return 1;
            count++;
        }
    }
    if (count == 0) {
        fprintf(stderr, "replay: no corpus files found\n");
        return 1;
    }
    printf("replayed %d inputs\n", count);
    return 0;
}
