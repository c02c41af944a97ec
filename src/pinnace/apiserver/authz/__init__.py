"""Authorization: request attributes, the RBAC authorizer and the access review APIs."""
