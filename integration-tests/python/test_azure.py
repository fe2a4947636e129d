"""The lake on Azure Blob Storage, through Azurite (npm, the emulator Microsoft publishes):
`weir run` writes there with `az://` and object_store's emulator options, the index matches the
container's blobs, and pyarrow reads the rows back from blobs downloaded with the Azure SDK."""

import io
import subprocess
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from azure.storage.blob import BlobServiceClient

from conftest import free_port, wait_listening
from test_durability import logs_request, post_logs

NODE_BIN = Path(__file__).resolve().parents[1] / "node" / "node_modules" / ".bin"
# Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture
def azurite(tmp_path, monkeypatch):
    port = free_port()
    log = (tmp_path / "azurite.log").open("wb")
    proc = subprocess.Popen(
        [str(NODE_BIN / "azurite-blob"), "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--location", str(tmp_path / "azurite"), "--silent", "--skipApiVersionCheck"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_listening(url, proc, "azurite")
    # object_store's emulator mode reads the endpoint from the environment.
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", url)
    client = BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={url}/{ACCOUNT};"
    )
    yield client
    # Azurite waits for idle keep-alive connections on SIGTERM; nothing of it needs saving.
    proc.kill()
    proc.wait(10)


def test_lake_on_azure_blob_storage(weir_factory, azurite):
    container = f"lake-{uuid.uuid4().hex[:8]}"
    azurite.create_container(container)
    w = weir_factory(
        f"""
[lake]
url = "az://{container}/weir"
max_file_age = "300ms"
[lake.options]
azure_storage_use_emulator = "true"
"""
    )
    sent = set()
    for b in range(6):
        assert post_logs(w, logs_request(b, 15)).status_code == 200
        sent |= {f"b{b}-r{i}-" + "x" * 40 for i in range(15)}
        time.sleep(0.35)
    w.wait_rows("logs", len(sent))
    segs = {s["object_key"]: s for s in w.segments("default", "logs")}
    blobs = {b.name.removeprefix("weir/"): b for b in azurite.get_container_client(container).list_blobs(name_starts_with="weir/")}
    assert set(blobs) == set(segs)
    bodies = []
    for key, seg in segs.items():
        data = azurite.get_container_client(container).download_blob(f"weir/{key}").readall()
        assert len(data) == seg["bytes"] == blobs[key].size
        t = pq.read_table(io.BytesIO(data))
        assert t.num_rows == seg["row_count"]
        bodies += t.column("body").to_pylist()
    assert sorted(bodies) == sorted(sent)
