"""The first rule: instrumenting changes nothing but what it adds."""
