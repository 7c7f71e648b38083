"""The test harness: real registries, a token server, deterministic images, skopeo, faults.

    pki          a throwaway CA and the certificate files TLS peers expect
    tokenserver  a Docker-style Bearer token server (JWTs with an x5c chain)
    registry     `docker-registry serve` processes, five variants, and a pool that stops them
    images       deterministic OCI / Docker images written as OCI layouts
    skopeo       seeding registries from layouts and verifying what they serve
    faultproxy   a recording reverse proxy that injects 429/5xx, resets, stalls, corruption

The fixtures that wire these together live in `tests/conftest.py`.
"""
