"""The ``reflexblue`` command: server, provisioning and administration of users, roles, seats and keys."""
