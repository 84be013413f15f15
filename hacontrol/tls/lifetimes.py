"""How long certificates made by `hacontrol tls` are valid, by default.

Apart from :mod:`hacontrol.tls.pki` so that the CLI can show them without importing
cryptography (10 MB in every process the CLI starts, agents included).
"""

CA_DAYS = 5 * 365
CERT_DAYS = 365
