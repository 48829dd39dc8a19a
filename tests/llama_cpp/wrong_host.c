/* A fake ggml host whose ggml_version() is not the plugin's: ggml_backend_init must return NULL
 * and say why, instead of touching structs of an unknown layout. Built with -rdynamic so the
 * plugin's dlsym(RTLD_DEFAULT, "ggml_version") finds this definition. */
#include <dlfcn.h>
#include <stdio.h>

const char * ggml_version(void) { return "0.0.1-not-the-pinned-one"; }

int main(int argc, char ** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: wrong_host <libggml_bitnet.so>\n");
        return 2;
    }
    void * lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "wrong_host: dlopen failed: %s\n", dlerror());
        return 1;
    }
    void * (*init)(void) = (void * (*)(void)) dlsym(lib, "ggml_backend_init");
    if (!init) {
        fprintf(stderr, "wrong_host: no ggml_backend_init\n");
        return 1;
    }
    void * reg = init();
    printf("ggml_backend_init returned %s\n", reg ? "a registry" : "NULL");
    return reg ? 1 : 0;
}
