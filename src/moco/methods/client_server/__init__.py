"""client_server methods."""
