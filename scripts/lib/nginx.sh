# Shared by scripts/cluster.sh, scripts/validate-deploy.sh and scripts/test.sh:
# finds nginx, installing the Debian package when it is missing and the
# script runs as root with apt-get (only the binary is used: every caller
# runs nginx in the foreground with its own prefix, never as the system
# service). The sourcing script defines `say` and `die`.

# find_nginx [WHY]: sets nginx_bin to the nginx binary (HERALD_NGINX if set,
# else nginx on PATH, else /usr/sbin/nginx), installing it when missing;
# dies, saying WHY it is needed and how to install it, when there is none.
find_nginx() {
    local why="${1:-nginx is required}"
    nginx_bin="${HERALD_NGINX:-}"
    [[ -z "$nginx_bin" ]] && nginx_bin="$(command -v nginx || true)"
    [[ -z "$nginx_bin" && -x /usr/sbin/nginx ]] && nginx_bin=/usr/sbin/nginx
    if [[ -z "$nginx_bin" ]]; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            say "nginx not found: installing the Debian package nginx (only the binary is used)"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq \
                && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null \
                || die "apt-get install nginx failed"
            nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
        fi
        [[ -x "$nginx_bin" ]] || die "$why (Debian/Ubuntu: sudo apt-get install nginx)"
    fi
    [[ -x "$nginx_bin" ]] || die "HERALD_NGINX=$nginx_bin is not an executable"
}
