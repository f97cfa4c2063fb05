/* main.c: the `kestrun` command: options, loading the scripts, listeners, the loop.
 *
 *   kestrun [OPTIONS] SCRIPT.lua [SCRIPT.lua ...]
 * Exit codes: 0 clean shutdown, 1 script or configuration error, 2 usage error.
 */
#include "kr_bus.h"
#include "kr_log.h"
#include "kr_lua.h"
#include "kr_redis.h"
#include "kr_server.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: kestrun [OPTIONS] SCRIPT.lua [SCRIPT.lua ...]\n"
            "\n"
            "Serves the HTTP routes and SignalR hubs that the Lua scripts define.\n"
            "\n"
            "  -l, --listen HOST:PORT   listen here instead of what the scripts ask (repeatable;\n"
            "                           port 0 = any free port; [::1]:PORT for IPv6)\n"
            "      --port-file FILE     after binding, write the bound port(s), one per line\n"
            "      --watch / --no-watch reload scripts when a loaded file changes (default: "
            "--watch)\n"
            "      --check              load and validate the scripts, print errors, exit 0 or 1\n"
            "      --redis URL          scale out: the Redis backplane at redis://[:pw@]host[:port][/db]\n"
            "                           (wins over the URL of the scripts' kr.backplane{})\n"
            "      --log-level LEVEL    Verbose | Debug | Information | Warning | Error | Fatal\n"
            "                           (default Information)\n"
            "      --log-format FORMAT  text | json (default text)\n"
            "                           (both, when given, win over the scripts' kr.logger{})\n"
            "  -h, --help               this help\n"
            "  -V, --version            print the version\n"
            "\n"
            "Signals: SIGINT/SIGTERM shut down gracefully, SIGHUP reloads the scripts.\n"
            "Exit codes: 0 clean shutdown, 1 script or configuration error, 2 usage error.\n");
}

typedef struct listen_opt_s {
    char host[64];
    int port;
} listen_opt_t;

/* Parses HOST:PORT, [V6]:PORT or :PORT (127.0.0.1). Returns 0 or -1. */
static int parse_listen(const char *arg, listen_opt_t *out)
{
    const char *colon;
    if (arg[0] == '[') {
        const char *close = strchr(arg, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - arg - 1) >= sizeof(out->host))
            return -1;
        memcpy(out->host, arg + 1, (size_t)(close - arg - 1));
        out->host[close - arg - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(arg, ':');
        if (colon == NULL || (size_t)(colon - arg) >= sizeof(out->host))
            return -1;
        memcpy(out->host, arg, (size_t)(colon - arg));
        out->host[colon - arg] = '\0';
        if (out->host[0] == '\0' || kr_strncasecmp(out->host, "localhost", 10) == 0)
            strcpy(out->host, "127.0.0.1");
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535)
        return -1;
    out->port = (int)port;
    return 0;
}

enum { OPT_PORT_FILE = 256, OPT_WATCH, OPT_NO_WATCH, OPT_CHECK, OPT_LOG_LEVEL, OPT_LOG_FORMAT,
       OPT_REDIS };

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"port-file", required_argument, NULL, OPT_PORT_FILE},
        {"watch", no_argument, NULL, OPT_WATCH},
        {"no-watch", no_argument, NULL, OPT_NO_WATCH},
        {"check", no_argument, NULL, OPT_CHECK},
        {"redis", required_argument, NULL, OPT_REDIS},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    listen_opt_t listens[KR_MAX_LISTENERS];
    unsigned nlistens = 0;
    const char *port_file = NULL;
    int check = 0, watch = 1;
    const char *redis_url = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "l:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            if (nlistens == KR_MAX_LISTENERS) {
                fprintf(stderr, "kestrun: at most %d --listen options\n", KR_MAX_LISTENERS);
                return 2;
            }
            if (parse_listen(optarg, &listens[nlistens]) != 0) {
                fprintf(stderr, "kestrun: --listen wants HOST:PORT, got '%s'\n", optarg);
                return 2;
            }
            nlistens++;
            break;
        case OPT_PORT_FILE:
            port_file = optarg;
            break;
        case OPT_WATCH:
            watch = 1;
            break;
        case OPT_NO_WATCH:
            watch = 0;
            break;
        case OPT_CHECK:
            check = 1;
            break;
        case OPT_REDIS: {
            kr_redis_opts_t ro;
            char why[160];
            memset(&ro, 0, sizeof(ro));
            if (kr_redis_parse_url(optarg, &ro, why, sizeof(why)) != 0) {
                fprintf(stderr, "kestrun: --redis: %s\n", why);
                return 2;
            }
            redis_url = optarg;
            break;
        }
        case OPT_LOG_LEVEL: {
            kr_log_level_e level;
            if (kr_log_level_parse(optarg, &level) != 0) {
                fprintf(stderr, "kestrun: unknown log level '%s'\n", optarg);
                return 2;
            }
            kr_log_set_level(level);
            break;
        }
        case OPT_LOG_FORMAT:
            if (strcmp(optarg, "text") == 0)
                kr_log_set_format(KR_LOG_TEXT);
            else if (strcmp(optarg, "json") == 0)
                kr_log_set_format(KR_LOG_JSON);
            else {
                fprintf(stderr, "kestrun: --log-format wants text or json, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("kestrun %s\n", KR_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "kestrun: no script given\n");
        usage(stderr);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    kr_server_t server;
    kr_server_init(&server, loop);
    kr_app_t *app = kr_app_new(&server, argv + optind, (unsigned)(argc - optind));
    if (redis_url != NULL) {
        char why[200];
        KR_ASSERT(kr_bus_configure(app->bus, redis_url, NULL, NULL, 1, why, sizeof(why)) == 0);
    }
    int rc = 0;
    if (kr_app_load(app) != 0) {
        rc = 1;
        goto out;
    }
    if (check) {
        printf("%s: OK\n", argc - optind == 1 ? argv[optind] : "scripts");
        goto out;
    }
    if (nlistens > 0) {
        for (unsigned i = 0; i < nlistens && rc == 0; i++) {
            int err = kr_server_listen(&server, listens[i].host, listens[i].port);
            if (err != 0) {
                KR_LOG(KR_LOG_FATAL, "server", "cannot listen on %s:%d: %s", listens[i].host,
                       listens[i].port, uv_strerror(err));
                rc = 1;
            }
        }
    } else if (app->vm->nlistens > 0) {
        for (unsigned i = 0; i < app->vm->nlistens && rc == 0; i++) {
            kr_listen_req_t *l = &app->vm->listens[i];
            int err = kr_server_listen_tls(&server, l->host, l->port,
                                           l->tls_cert[0] ? l->tls_cert : NULL, l->tls_key);
            if (err != 0) {
                KR_LOG(KR_LOG_FATAL, "server", "cannot listen on %s:%d: %s", l->host, l->port,
                       uv_strerror(err));
                rc = 1;
            }
        }
    } else {
        int err = kr_server_listen(&server, "127.0.0.1", 5000);
        if (err != 0) {
            KR_LOG(KR_LOG_FATAL, "server", "cannot listen on 127.0.0.1:5000: %s",
                   uv_strerror(err));
            rc = 1;
        }
    }
    if (rc != 0)
        goto out;
    if (port_file) {
        int err = kr_server_write_port_file(&server, port_file);
        if (err != 0) {
            KR_LOG(KR_LOG_FATAL, "server", "cannot write port file %s: %s", port_file,
                   uv_strerror(err));
            rc = 1;
            goto out;
        }
    }
    kr_server_start(&server);
    kr_bus_start(app->bus); /* the Redis backplane, when configured: connects in the background */
    if (watch)
        (void)kr_app_watch(app); /* failure is logged; SIGHUP still reloads */
    uv_run(loop, UV_RUN_DEFAULT);
    KR_LOG(KR_LOG_INFO, "server", "stopped");
out:
    kr_app_free(app);
    kr_server_dispose(&server);
    int closed = uv_loop_close(loop);
    if (closed != 0)
        KR_LOG(KR_LOG_DEBUG, "server", "loop closed with handles left: %s", uv_strerror(closed));
    return rc;
}
