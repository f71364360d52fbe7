/* plumb keygen: a CURVE key pair for the coordinator or a worker. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "common/transport.h"
#include "tools/cmd.h"
#include "tools/opts.h"
#include "tools/util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: plumb keygen PREFIX [--force]\n"
            "\n"
            "Writes a new CURVE key pair: PREFIX.key (public and secret key, mode 0600)\n"
            "and PREFIX.pub (the public key only), then prints both paths and the public\n"
            "key as a line for an authorized-keys file. The coordinator's .key goes to\n"
            "its config and its .pub to the workers; each worker's public key is a line\n"
            "of the coordinator's authorized-keys file. An existing PREFIX.key is kept\n"
            "unless --force.\n");
}

int cmd_keygen(int argc, char **argv) {
    const char *prefix = NULL;
    int force = 0;
    const Opt opts[] = {OPT_POS("PREFIX", &prefix, 1), OPT_FLAG("--force", &force), OPT_END};
    int prc = opts_parse("keygen", argc, argv, 1, opts, usage);
    if (prc >= 0) return prc;
    if (!prefix[0]) return opts_fail("keygen", usage, "PREFIX is empty");
    char key_path[4096], pub_path[4096];
    snprintf(key_path, sizeof key_path, "%s.key", prefix);
    snprintf(pub_path, sizeof pub_path, "%s.pub", prefix);
    struct stat st;
    if (!force && stat(key_path, &st) == 0) {
        fprintf(stderr, "plumb keygen: %s exists (--force replaces it)\n", key_path);
        return 1;
    }
    char pub[ZT_KEY_LEN + 1], sec[ZT_KEY_LEN + 1];
    if (zt_keygen(pub, sec) < 0 || zt_key_write(prefix, pub, sec) < 0) {
        memset(sec, 0, sizeof sec);
        report_error("keygen", NULL);
        return 1;
    }
    memset(sec, 0, sizeof sec);
    printf("secret key file: %s\npublic key file: %s\npublic-key = \"%s\"\n", key_path,
           pub_path, pub);
    return 0;
}
