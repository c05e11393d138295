# Helpers the bench scripts share; sourced, not run.

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# gateway_header DIR PORT: the [server] and [log] sections of a bench gateway listening on
# PORT, with its pid file and upgrade socket in DIR (warnings only: logging costs CPU).
gateway_header() {
  cat <<TOML
[server]
listen = "127.0.0.1:$2"
grace_period_s = 1
pid_file = "$1/gateway.pid"
upgrade_sock = "$1/upgrade.sock"

[log]
level = "warn"
TOML
}
