"""Download data sets from their canonical sources, with checksum checks (``spquant data fetch``).

``fetch(name, root)`` puts data set ``name`` into ``root / FOLDER`` (FOLDER is listed per data set in
:data:`SOURCES`) and returns that folder, which is what the data set classes take as ``root``. Every
file is checked against its published MD5 (MNIST: the MD5 of the *uncompressed* IDX content, so
any correct gzip is accepted). When the network fails, :class:`FetchError` says exactly which files
to download by hand and where to put them; data sets that need a registration (DVS128 Gesture,
Prophesee Gen1) always get those instructions.

>>> sorted(SOURCES)[:3]
['1mpx', 'cifar10', 'cifar10-dvs']
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from spquant.errors import FetchError


@dataclass(frozen=True)
class Resource:
    filename: str
    urls: tuple[str, ...]
    md5: str
    check: str = "file"  # 'file': md5 of the file; 'gunzip': md5 of its gunzipped content
    extract_to: str | None = (
        None  # unpack (zip / tar) into this sub-folder of the data set folder ('' = itself)
    )


@dataclass(frozen=True)
class Source:
    name: str
    folder: str
    homepage: str
    layout: str
    resources: tuple[Resource, ...] = ()
    manual: str = ""  # non-empty: cannot be downloaded automatically
    licence: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


def _idx(base_urls, md5s, check="file"):
    names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    return tuple(Resource(n, tuple(b + n for b in base_urls), m, check) for n, m in zip(names, md5s))


_CIFAR10DVS = [
    ("airplane", "7712788", "0afd5c4bf9ae06af762a77b180354fdd"),
    ("automobile", "7712791", "8438dfeba3bc970c94962d995b1b9bdd"),
    ("bird", "7712794", "a9c207c91c55b9dc2002dc21c684d785"),
    ("cat", "7712812", "52c63c677c2b15fa5146a8daf4d56687"),
    ("deer", "7712815", "b6bf21f6c04d21ba4e23fc3e36c8a4a3"),
    ("dog", "7712818", "f379ebdf6703d16e0a690782e62639c3"),
    ("frog", "7712842", "cad6ed91214b1c7388a5f6ee56d08803"),
    ("horse", "7712851", "e7cbbf77bec584ffbf913f00e682782a"),
    ("ship", "7712836", "41c7bd7d6b251be82557c6cce9a7d5c9"),
    ("truck", "7712839", "89f3922fd147d9aeff89e76a2b0b70a7"),
]

SOURCES: dict[str, Source] = {
    "mnist": Source(
        "MNIST",
        "mnist",
        "http://yann.lecun.com/exdb/mnist/",
        "mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz",
        _idx(
            ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
            [
                "6bbc9ace898e44ae57da46a324031adb",
                "a25bea736e30d166cdddb491f175f624",
                "2646ac647ad5339dbf082846283269ea",
                "27ae3e4e09519cfbb04c329615203637",
            ],
            check="gunzip",
        ),
        licence="CC BY-SA 3.0 (as usually given)",
    ),
    "fashion-mnist": Source(
        "Fashion-MNIST",
        "fashion-mnist",
        "https://github.com/zalandoresearch/fashion-mnist",
        "fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz",
        _idx(
            ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
            [
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ],
        ),
        licence="MIT",
    ),
    "kmnist": Source(
        "KMNIST",
        "kmnist",
        "https://github.com/rois-codh/kmnist",
        "kmnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz",
        _idx(
            ["http://codh.rois.ac.jp/kmnist/dataset/kmnist/"],
            [
                "bdb82020997e1d708af4cf47b453dcf7",
                "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7",
                "7320c461ea6c1c855c0b718fb2a4b134",
            ],
        ),
        licence="CC BY-SA 4.0",
    ),
    "cifar10": Source(
        "CIFAR-10 (python version)",
        "cifar10",
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        "cifar10/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
        (
            Resource(
                "cifar-10-python.tar.gz",
                ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                "c58f30108f718f92721af3b95e74349a",
                extract_to="",
            ),
        ),
    ),
    "nmnist": Source(
        "N-MNIST",
        "nmnist",
        "https://www.garrickorchard.com/datasets/n-mnist",
        "nmnist/Train/<digit>/<id>.bin and nmnist/Test/<digit>/<id>.bin",
        (
            Resource(
                "Train.zip",
                (
                    "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
                    "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded",
                ),
                "20959b8e626244a1b502305a9e6e2031",
                extract_to="",
            ),
            Resource(
                "Test.zip",
                (
                    "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
                    "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded",
                ),
                "69ca8762b2fe404d9b9bad1103e97832",
                extract_to="",
            ),
        ),
        licence="CC BY-SA 4.0",
    ),
    "ncaltech101": Source(
        "N-Caltech101",
        "ncaltech101",
        "https://www.garrickorchard.com/datasets/n-caltech101",
        "ncaltech101/Caltech101/<class>/image_<id>.bin",
        (
            Resource(
                "Caltech101.zip",
                (
                    "https://data.mendeley.com/public-files/datasets/cy6cvx3ryv/files/"
                    "36b5c52a-b49d-4853-addb-a836a8883e49/file_downloaded",
                ),
                "66201824eabb0239c7ab992480b50ba3",
                extract_to="",
            ),
        ),
        licence="CC BY-SA 4.0",
    ),
    "cifar10-dvs": Source(
        "CIFAR10-DVS",
        "cifar10-dvs",
        "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671",
        "cifar10-dvs/<class>/.../cifar10_<class>_<id>.aedat (AEDAT 2.0)",
        tuple(
            Resource(f"{c}.zip", (f"https://ndownloader.figshare.com/files/{fid}",), md5, extract_to=c)
            for c, fid, md5 in _CIFAR10DVS
        ),
        licence="CC BY 4.0",
    ),
    "dvs128-gesture": Source(
        "DVS128 Gesture",
        "dvs128-gesture",
        "https://research.ibm.com/interactive/dvsgesture/",
        "dvs128-gesture/DvsGesture/user<NN>_<lighting>.aedat + user<NN>_<lighting>_labels.csv + "
        "trials_to_train.txt + trials_to_test.txt",
        manual="download DvsGesture.tar.gz from the IBM page (requires accepting its licence) and unpack it so that "
        "ROOT/dvs128-gesture/DvsGesture/ holds the .aedat files, their _labels.csv files and trials_to_train.txt / "
        "trials_to_test.txt",
        licence="CC BY 4.0",
    ),
    "gen1": Source(
        "Prophesee Gen1 Automotive Detection",
        "gen1",
        "https://www.prophesee.ai/2020/01/24/prophesee-gen1-automotive-detection-dataset/",
        "gen1/{train,val,test}/<name>_td.dat + <name>_bbox.npy",
        manual="request the data set from Prophesee (registration required), unpack the archives so that "
        "ROOT/gen1/train, ROOT/gen1/val and ROOT/gen1/test each hold pairs <name>_td.dat + <name>_bbox.npy",
    ),
    "1mpx": Source(
        "Prophesee 1 Megapixel Automotive Detection",
        "1mpx",
        "https://www.prophesee.ai/2020/11/24/automotive-megapixel-event-based-dataset/",
        "1mpx/{train,val,test}/<name>_td.dat + <name>_bbox.npy",
        manual="request the data set from Prophesee (registration required), unpack the archives so that "
        "ROOT/1mpx/train, ROOT/1mpx/val and ROOT/1mpx/test each hold pairs <name>_td.dat + <name>_bbox.npy",
    ),
}


def default_root() -> Path:
    """Default data folder: ``$SPQUANT_DATA`` or ``~/.cache/spquant/data``."""
    return Path(os.environ.get("SPQUANT_DATA", Path.home() / ".cache" / "spquant" / "data"))


def md5_of(path, check: str = "file") -> str:
    h = hashlib.md5()
    opener = gzip.open if check == "gunzip" else open
    try:
        with opener(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except (OSError, EOFError):
        return "unreadable"
    return h.hexdigest()


def manual_instructions(name: str, root) -> str:
    src = SOURCES[name]
    dest = Path(root) / src.folder
    lines = [
        f"{src.name}: put these files into {dest} (then run 'spquant data fetch {name} --root {root}' "
        "again to check and unpack them):"
    ]
    for r in src.resources:
        what = "md5 of the gunzipped content" if r.check == "gunzip" else "md5"
        lines.append(f"  {dest / r.filename}  <- {' or '.join(r.urls)}  ({what} {r.md5})")
    if src.manual:
        lines.append(f"  {src.manual.replace('ROOT', str(root))}")
    lines.append(f"  final layout: {src.layout}  (see {src.homepage})")
    return "\n".join(lines)


def _download(url: str, dest: Path, timeout: float, progress: bool) -> None:
    tmp = dest.with_name(dest.name + ".part")
    req = urllib.request.Request(url, headers={"User-Agent": "spquant-data-fetch"})
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name)
        try:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    tmp.replace(dest)


def _safe_extract(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for m in z.namelist():
                if not (root / m).resolve().is_relative_to(root):
                    raise FetchError(f"{archive}: refusing to extract {m!r} outside {dest}")
            z.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    else:
        raise FetchError(f"{archive}: neither a zip nor a tar archive")


def fetch(name: str, root=None, *, force: bool = False, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download (if needed), verify and unpack data set ``name`` into ``root / folder``; return that folder."""
    if name not in SOURCES:
        raise FetchError(f"unknown data set {name!r}; known: {', '.join(sorted(SOURCES))}")
    src = SOURCES[name]
    root = Path(root) if root is not None else default_root()
    dest = root / src.folder
    if src.manual:
        raise FetchError(
            f"{src.name} cannot be downloaded automatically: {src.manual.replace('ROOT', str(root))}.\n"
            f"Final layout: {src.layout} (see {src.homepage})"
        )
    dest.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[str, str]] = []
    for r in src.resources:
        path = dest / r.filename
        if path.exists() and not force and md5_of(path, r.check) == r.md5:
            continue
        errors = []
        for url in r.urls:
            try:
                _download(url, path, timeout, progress)
                break
            except (urllib.error.URLError, OSError, TimeoutError, ValueError) as e:
                errors.append(f"{url}: {e}")
        else:
            failed.append((r.filename, errors[-1]))
            continue
        got = md5_of(path, r.check)
        if got != r.md5:
            bad = path.with_name(path.name + ".bad")
            path.replace(bad)
            raise FetchError(
                f"{path}: checksum mismatch (md5 {got}, expected {r.md5}); the download was kept as "
                f"{bad}.\n" + manual_instructions(name, root)
            )
    if failed:
        names = ", ".join(f for f, _ in failed)
        raise FetchError(
            f"could not download {names} (last error: {failed[-1][1]})\n" + manual_instructions(name, root)
        )
    for r in src.resources:
        if r.extract_to is not None:
            marker = dest / f".{r.filename}.extracted"
            if force or not marker.exists():
                _safe_extract(dest / r.filename, dest / r.extract_to)
                marker.write_text(r.md5)
    return dest


def remove_archives(name: str, root) -> None:
    """Delete the downloaded archives of ``name`` once unpacked (keeps the unpacked data)."""
    src = SOURCES[name]
    for r in src.resources:
        if r.extract_to is not None:
            p = Path(root) / src.folder / r.filename
            if p.exists():
                p.unlink()


__all__ = [
    "FetchError",
    "Resource",
    "Source",
    "SOURCES",
    "default_root",
    "fetch",
    "manual_instructions",
    "md5_of",
    "remove_archives",
]
