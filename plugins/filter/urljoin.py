# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
"""The urljoin filter: Python's urllib.parse.urljoin, for links that an index page gives relative to itself."""

from __future__ import annotations

from urllib.parse import urljoin as _urljoin

from ansible.errors import AnsibleFilterError


def urljoin(base, url):
    """Resolve url against base as a browser would (RFC 3986: dot segments, absolute paths, other schemes)."""
    if not isinstance(base, str) or not isinstance(url, str):
        raise AnsibleFilterError("urljoin: base and url must be strings, got %s and %s"
                                 % (type(base).__name__, type(url).__name__))
    return _urljoin(base, url)


class FilterModule:
    """The collection's filters."""

    def filters(self):
        return {"urljoin": urljoin}
