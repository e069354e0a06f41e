"""HTTP routes, one module per audience: task clients, operators, administrators."""
