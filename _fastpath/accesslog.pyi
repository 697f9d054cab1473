class LogLines:
    lines: int
    def __len__(self) -> int: ...
    def take(self) -> bytes: ...
    def add(
        self,
        unix_time: float,
        request_id: bytes,
        route: str,
        method: bytes,
        target: bytes,
        status: int,
        bytes_sent: int,
        upstream: str | None,
        duration_us: int,
        client: bytes,
    ) -> None: ...
