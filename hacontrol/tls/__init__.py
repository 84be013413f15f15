"""TLS for every hacontrol link: a small certificate authority, certificates that say their
role, and the `ssl.SSLContext`s built from them.

A certificate names its role as a DNS name (`server.hacontrol`, `agent.hacontrol`,
`cli.hacontrol`), as Nomad's `server.<region>.nomad`; each side of a link checks the role of
the other (the client through the server name it verifies, the server from the peer
certificate), so an agent's certificate cannot stand in for a controller's. This package
imports nothing of ours.
"""
