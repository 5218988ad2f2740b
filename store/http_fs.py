"""fsspec's HTTP filesystem with existence checks that send no body.

fsspec's `exists` and `isfile` over http(s) send a GET, and a static server answers it with
the whole file (plain `python -m http.server` writes all of it before the client can hang
up); pyarrow's dataset discovery calls them for every Parquet file it opens. Here both send
a HEAD. `Location.of` swaps this class in for every http(s) warehouse; it is imported only
then, since it needs aiohttp (the `http` extra).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from fsspec.implementations.http import HTTPFileSystem


class HeadHTTPFileSystem(HTTPFileSystem):
    async def _exists(self, path: str, strict: bool = False, **kwargs: Any) -> bool:
        kw = {**self.kwargs, **kwargs}
        try:
            session = await self.set_session()
            async with session.head(self.encode_url(path), allow_redirects=True, **kw) as r:
                if strict:
                    self._raise_not_found_for_status(r, path)
                return r.status < 400
        except FileNotFoundError:
            return False
        except aiohttp.ClientError:
            if strict:
                raise
            return False

    async def _isfile(self, path: str, **kwargs: Any) -> bool:
        return await self._exists(path, **kwargs)
