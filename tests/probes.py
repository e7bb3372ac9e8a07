"""Probes a test runs inside a container (python3 -c SCRIPT HOST [PORT]) to tell whether a service answers."""

# Speaks the first bytes of PostgreSQL's protocol (an SSLRequest), so that a connection
# accepted by anything other than a PostgreSQL server does not count as reaching one.
POSTGRES = (
    "import socket, struct, sys\n"
    "s = socket.create_connection((sys.argv[1], 5432), timeout=3)\n"
    "s.sendall(struct.pack('!ii', 8, 80877103))\n"
    "answer = s.recv(1)\n"
    "assert answer in (b'N', b'S'), answer\n"
    "print('postgres answered')\n"
)
ROUTES = "print(open('/proc/net/route').read())"
# An HTTP request; only an answer that starts like HTTP counts (this sandbox accepts TCP connects to
# any 10.x address, so a bare connect proves nothing).
HTTP = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    "s.sendall(b'GET /health HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n')\n"
    "answer = s.recv(12)\n"
    "assert answer.startswith(b'HTTP/'), answer\n"
    "print('http answered', answer)\n"
)
REDIS = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], 6379), timeout=3)\n"
    "s.sendall(b'PING\\r\\n')\n"
    "answer = s.recv(7)\n"
    "assert answer == b'+PONG\\r\\n', answer\n"
    "print('redis answered')\n"
)


def run_in(container: object, *cmd: str) -> tuple[int, str]:
    """Run a command in a container (of the Docker SDK); its exit code and output."""
    code, output = container.exec_run(list(cmd))  # type: ignore[attr-defined]
    return code, output.decode(errors="replace")
