def test_azurite_serves_blob_queue_and_table(azurite_storage, segment_container, unique):
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueClient

    segment_container.upload_blob("a.txt", b"hello")
    assert segment_container.download_blob("a.txt").readall() == b"hello"
    q = QueueClient.from_connection_string(azurite_storage, f"q{unique}")
    q.create_queue()
    q.send_message("m")
    assert [m.content for m in q.receive_messages()] == ["m"]
    q.delete_queue()
    tables = TableServiceClient.from_connection_string(azurite_storage)
    t = tables.create_table(f"t{unique}")
    t.create_entity({"PartitionKey": "p", "RowKey": "r", "v": 1})
    assert t.get_entity("p", "r")["v"] == 1
    tables.delete_table(f"t{unique}")
