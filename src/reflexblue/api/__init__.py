"""HTTP adapters: security endpoints, v1/v2 routers, generic resource routes, problem responses."""
