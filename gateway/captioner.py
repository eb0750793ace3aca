"""python -m gateway.captioner: a caption worker alone (gateway.server.captioner), for a Kubernetes
Deployment scaled on the queue's depth next to the Triton tier."""

from .server.captioner import main

if __name__ == "__main__":
    main()
