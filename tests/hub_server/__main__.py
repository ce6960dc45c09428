"""`python -m tests.hub_server` (from the repository root): serve an empty local Hub until interrupted."""

import argparse

from .server import HubServer


def main():
    parser = argparse.ArgumentParser(description="Serve an empty local Hub (in memory) until interrupted.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default="hf_local", help="Access token accepted for the user (default: hf_local).")
    parser.add_argument("--user", default="user", help="User name of the token (default: user).")
    args = parser.parse_args()
    server = HubServer({args.token: args.user}, port=args.port)
    print(
        f"Serving a local Hub at {server.url}: export HF_ENDPOINT={server.url} HF_TOKEN={args.token} HF_HUB_DISABLE_XET=1",
        flush=True,
    )
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
