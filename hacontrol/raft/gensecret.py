"""``python -m hacontrol.raft.gensecret``: print a new cluster secret (see ``keys``)."""

from hacontrol.raft.keys import generate_secret

if __name__ == "__main__":
    print(generate_secret())
