#!/usr/bin/env python3
"""Package canary_gate.wasm as an OCI image layout that Istio's WasmPlugin can pull.

Layout written (OCI image-layout 1.0): OUT/oci-layout, OUT/index.json, OUT/blobs/sha256/*.
Push it with e.g. `skopeo copy oci:OUT:TAG docker://REGISTRY/canary-gate:TAG`.

Variant: the "compat" one of the Wasm image spec, i.e. an ordinary OCI image
(OCI manifest, OCI image config, one application/vnd.oci.image.layer.v1.tar+gzip
layer holding only `plugin.wasm`). Every Istio release with WasmPlugin (1.12+)
reads it the same way, and, having no custom media types, it is handled by any
registry and image tool (skopeo, crane, containerd). The "oci" artifact variant
relies on custom config/layer media types, and the layer count Istio's fetcher
expects of it has differed between releases.

The build is reproducible: fixed tar metadata, gzip mtime 0, canonical JSON, so
the same .wasm always yields the same manifest digest.

Prints the manifest digest (sha256:...) on stdout.
"""

import argparse
import gzip
import hashlib
import io
import json
import shutil
import sys
import tarfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WASM = ROOT / "target/wasm32-wasip1/release/canary_gate.wasm"
DEFAULT_OUT = ROOT / "target/oci/canary-gate"

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX = "application/vnd.oci.image.index.v1+json"


def cargo_version() -> str:
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["package"]["version"]


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(wasm: bytes) -> bytes:
    info = tarfile.TarInfo("plugin.wasm")
    info.size = len(wasm)
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of anything that varies.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def prepare_out(out: Path) -> None:
    # Only ever delete a previous layout, never an arbitrary directory given by mistake.
    if out.exists():
        if not (out / "oci-layout").is_file() and any(out.iterdir()):
            sys.exit(f"{out} exists and is not an OCI layout; refusing to overwrite it")
        shutil.rmtree(out)
    (out / "blobs/sha256").mkdir(parents=True)


def write_blob(out: Path, data: bytes) -> dict:
    digest = sha256(data)
    (out / "blobs/sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def build(wasm_path: Path, out: Path, tag: str) -> str:
    tar = layer_tar(wasm_path.read_bytes())
    prepare_out(out)

    layer = {"mediaType": LAYER, **write_blob(out, gzip_bytes(tar))}
    config = {
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        # diff_ids name the uncompressed tar, as container runtimes verify them.
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, **write_blob(out, canonical_json(config))},
        "layers": [layer],
        "annotations": {
            "org.opencontainers.image.title": "canary-gate",
            "org.opencontainers.image.version": tag,
        },
    }
    manifest_desc = write_blob(out, canonical_json(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {
                "mediaType": MANIFEST,
                **manifest_desc,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (out / "index.json").write_bytes(canonical_json(index))
    (out / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    return manifest_desc["digest"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wasm", type=Path, default=DEFAULT_WASM, help="filter module (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="OCI layout directory (default: %(default)s)")
    parser.add_argument("--tag", default=None, help="image tag (default: the version in Cargo.toml)")
    args = parser.parse_args()
    if not args.wasm.is_file():
        sys.exit(f"{args.wasm}: no such file (build the filter first)")
    print(build(args.wasm, args.out, args.tag or cargo_version()))


if __name__ == "__main__":
    main()
