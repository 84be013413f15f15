"""One controller replica: its Raft replica, the log writes and reads the API and the
leader loop make through it, and the failures they can see (`errors`)."""
