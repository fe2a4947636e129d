# Sourced by the load scripts (compare.sh, malloc_arenas.sh, overload_soak.sh).

# A free TCP port on the loopback.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Prints the part of a Weir configuration every load script shares: OTLP/HTTP only (no gRPC,
# no other source), and the admin port. $1 = data dir, $2 = OTLP/HTTP port, $3 = admin port.
otlp_only_toml() {
  cat <<TOML
data_dir = "$1"
[sources.otlp]
http_address = "127.0.0.1:$2"
grpc_address = ""
[sources.loki]
enabled = false
[sources.datadog]
enabled = false
[sources.fluent]
enabled = false
[sources.syslog]
enabled = false
[admin]
address = "127.0.0.1:$3"
TOML
}
