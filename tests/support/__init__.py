"""What the tests share: real servers, bare ASGI requests, broken logging."""
