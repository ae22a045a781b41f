from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from mae3d.data import cerebra
from mae3d.data.sources import locate
from mae3d.data.volumes import read_volume


@pytest.fixture(scope="module")
def table():
    return cerebra.read_label_table(locate("cerebra_label_table"))


def test_table_lists_102_labels_one_per_hemisphere(table):
    assert [lab.value for lab in table] == list(range(1, 103))
    assert sum(lab.hemisphere == "right" for lab in table) == 51


def test_mapping_covers_every_label_in_the_atlas_and_uses_every_class(table):
    mapping = cerebra.coarse_mapping(table)
    atlas = read_volume("cerebra_labels")  # keep a reference: the array view does not own the voxels
    atlas_values = np.unique(np.rint(sitk.GetArrayViewFromImage(atlas)).astype(int))
    assert set(atlas_values.tolist()) - {0} <= set(mapping)
    assert set(mapping.values()) == set(cerebra.COARSE_CLASSES.values())  # background via optic chiasm
    by_name = {(lab.name, lab.hemisphere): mapping[lab.value] for lab in table}
    c = cerebra.COARSE_CLASSES
    assert by_name[("Precentral", "left")] == c["cortex"]
    assert by_name[("Thalamus", "right")] == c["deep_grey_matter"]
    assert by_name[("Lateral Ventricle", "left")] == c["ventricles"]
    assert by_name[("Vermal lobules I-V", "right")] == c["cerebellum"]
    assert by_name[("Brainstem", "left")] == c["brainstem"]
    assert by_name[("Optic Chiasm", "left")] == c["background"]
    counts = np.bincount(list(mapping.values()))
    assert counts.tolist() == [2, 62, 18, 10, 8, 2]


def test_unknown_mindboggle_id_is_an_error(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("Mindboggle ID,Label Name,RH Label,LH Labels,Notes,Dice Kappa\n9999,Mystery,1,2,,0.5\n")
    with pytest.raises(ValueError, match="9999 has no coarse class"):
        cerebra.coarse_mapping(cerebra.read_label_table(csv))
    csv.write_text("Mindboggle ID,Label Name,RH Label\n2002,Cingulate,x\n")
    with pytest.raises(ValueError, match=r"t\.csv: malformed"):
        cerebra.read_label_table(csv)


def test_coarse_map_with_unlabelled_brain_class(table):
    atlas = sitk.Image([4, 1, 1], sitk.sitkFloat32)
    for i, v in enumerate([0, 0, 46, 41]):  # bg, bg, cerebellum WM (RH), lateral ventricle (RH)
        atlas[i, 0, 0] = v
    mask = sitk.Image([4, 1, 1], sitk.sitkUInt8)
    mask[1, 0, 0] = mask[2, 0, 0] = 1
    out = cerebra.coarse_label_map(atlas, table, mask)
    assert sitk.GetArrayViewFromImage(out).ravel().tolist() == [0, cerebra.UNLABELLED_BRAIN_CLASS[1], 3, 4]
    atlas[0, 0, 0] = 150
    with pytest.raises(ValueError, match=r"\[150\] missing from the label table"):
        cerebra.coarse_label_map(atlas, table)
