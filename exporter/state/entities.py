"""The shape of a repository whose entities live one per row in one partition of their table
(connections, exports): conversion to and from the entity is the subclass's (``_serialize``,
``_deserialize`` beside it), reading and writing is here. The conversions are written out field by
field on purpose, and look alike: the entity's property names are the storage format."""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

T = TypeVar("T")


class PartitionRepository(Generic[T]):
    partition: str

    def __init__(self, table: TableClient, serialize: Callable[[T], dict], deserialize: Callable[[Any], T]):
        self._table = table
        self._serialize = serialize
        self._deserialize = deserialize

    def put(self, item: T) -> None:
        self._table.upsert_entity(self._serialize(item), mode=UpdateMode.REPLACE)

    def get(self, row_key: str) -> T | None:
        try:
            return self._deserialize(self._table.get_entity(self.partition, row_key))
        except ResourceNotFoundError:
            return None

    def all(self) -> list[T]:
        return [self._deserialize(e) for e in self._table.query_entities(f"PartitionKey eq '{self.partition}'")]

    def delete(self, row_key: str) -> None:
        self._table.delete_entity(self.partition, row_key)
