"""python -m gateway: serve the API (gateway.server.main)."""

from .server.main import main

if __name__ == "__main__":
    main()
