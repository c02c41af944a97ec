"""`pinnace images import|busybox|ls`: images in the containerd of the node(s) under a data dir.

A node started with data dir D runs its containerd at `D/containerd/containerd.sock`; a cluster made
by `pinnace up --data-dir D` keeps its nodes under `D/nodes/<name>/`. Imports go into containerd's
`k8s.io` namespace, the only one its CRI plugin sees. `busybox` builds a small image from this
machine's busybox-static (Debian's package), so the cri runtime runs something with no registry at all.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from pinnace.cli.common import default_data_dir, say


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("images", help="import and list container images of the cri runtime")
    sub = parser.add_subparsers(dest="images_command", metavar="ACTION", required=True)
    importer = sub.add_parser("import", help="import an OCI layout or docker-save archive")
    importer.add_argument("--data-dir", default=None, help="the node's (or `pinnace up`'s) data dir")
    importer.add_argument("file", help="the image archive (.tar)")
    importer.set_defaults(func=import_image)
    builder = sub.add_parser("busybox", help="build an image of this machine's busybox-static and import it")
    builder.add_argument("--data-dir", default=None, help="the node's (or `pinnace up`'s) data dir")
    builder.add_argument("--name", default="busybox:local",
                         help="image reference (default %(default)s; a tag other than latest, so pods with the "
                              "default pull policy use it without a registry)")
    builder.set_defaults(func=build_busybox)
    lister = sub.add_parser("ls", help="list images")
    lister.add_argument("--data-dir", default=None, help="the node's (or `pinnace up`'s) data dir")
    lister.set_defaults(func=list_images)


def containerd_sockets(data_dir: Path) -> list[Path]:
    own = data_dir / "containerd" / "containerd.sock"
    sockets = [own] if own.exists() else []
    sockets += sorted(data_dir.glob("nodes/*/containerd/containerd.sock"))
    if not sockets:
        from pinnace.cli.main import CliError

        raise CliError(f"no running containerd under {data_dir}: start the node with `--runtime cri` first")
    return sockets


def ctr(socket: Path, *args: str) -> str:
    result = subprocess.run(["ctr", "--address", str(socket), "--namespace", "k8s.io", *args],
                            capture_output=True, text=True)
    if result.returncode != 0:
        from pinnace.cli.main import CliError

        raise CliError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def import_image(args: argparse.Namespace) -> int:
    from pinnace.cli.main import CliError

    archive = Path(args.file).resolve()
    if not archive.is_file():
        raise CliError(f"{archive} does not exist")
    return import_archive(archive, Path(args.data_dir or default_data_dir()).expanduser())


def build_busybox(args: argparse.Namespace) -> int:
    from pinnace.cli.main import CliError
    from pinnace.kubelet.runtime.oci_archive import ImageConfig, build_busybox_image, normalize_reference

    data_dir = Path(args.data_dir or default_data_dir()).expanduser()
    containerd_sockets(data_dir)  # fail before building when there is nowhere to import
    with tempfile.TemporaryDirectory(prefix="pinnace-image-") as tmp:
        archive = Path(tmp) / "image.tar"
        try:
            build_busybox_image(args.name, archive, Path(tmp), ImageConfig(cmd=["sh"]))
        except FileNotFoundError as error:
            raise CliError(str(error)) from None
        return import_archive(archive, data_dir, normalize_reference(args.name))


def import_archive(archive: Path, data_dir: Path, name: str | None = None) -> int:
    for socket in containerd_sockets(data_dir):
        out = ctr(socket, "images", "import", "--no-unpack", str(archive))
        # ctr names what it imported only on some versions; say it either way.
        names = [line.removeprefix("unpacking ").split()[0] for line in out.splitlines() if line.strip()]
        say(f"{socket.parent.parent.name}: imported {', '.join(names) or name or archive.name}")
    return 0


def list_images(args: argparse.Namespace) -> int:
    for socket in containerd_sockets(Path(args.data_dir or default_data_dir()).expanduser()):
        out = ctr(socket, "images", "ls")
        say(f"# {socket.parent.parent}")
        say(out.rstrip())
    return 0
