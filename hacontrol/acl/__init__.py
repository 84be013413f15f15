"""The permission model: who may do what, as pure functions over plain records.

`authorize` decides one action for one token and its policies (default deny, `deny` wins,
namespace globs); `secrets` makes token secrets and the hashes the state keeps. The state
machine calls these when it applies a command, the API when a request comes in.
"""
