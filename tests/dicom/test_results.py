"""dicom.write_results: a Comprehensive 3D SR (TID 1500) and a heat-map secondary capture per series,
in the source study with series of their own; re-read with pydicom."""
import json

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from tests.dicom.synth import PHI, series, to_bytes
from tests.dicom.test_watch_dicom import head
from tests.service.conftest import drop

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def content_items(ds):
    """Every content item of an SR tree, depth first."""
    for item in ds.get("ContentSequence", []):
        yield item
        yield from content_items(item)


def test_sr_and_heatmap_reference_the_source_study(service, rng):
    w = service(watch={"explain": True}, args=["--set", "dicom.series_stable_seconds=1",
                                               "--set", "dicom.write_results=true"]).start()
    w.wait_for("service.ready")
    study, uid = generate_uid(), generate_uid()
    slices = series([head(rng, k == 1) for k in range(3)], study=study, series=uid)
    for k, ds in enumerate(slices):
        drop(w.input, f"s{k}.dcm", to_bytes(ds))
    w.wait_for("series.classified", 1, timeout=60)
    verdict = json.loads(next((w.output / "series").glob("*.json")).read_text())
    assert verdict["dicom_results"] == {"sr": f"dicom/{uid}.sr.dcm", "heatmap": f"dicom/{uid}.heatmap.dcm"}
    assert w.stop() == 0

    sr = pydicom.dcmread(w.output / verdict["dicom_results"]["sr"])
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR and sr.Modality == "SR"
    assert sr.StudyInstanceUID == study and sr.SeriesInstanceUID not in (uid, "")
    assert sr.PatientID == PHI["PatientID"]  # a PACS files it with the patient's study
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    evidence = {r.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence if se.SeriesInstanceUID == uid for r in se.ReferencedSOPSequence}
    assert evidence == {ds.SOPInstanceUID for ds in slices}
    items = list(content_items(sr))
    coded = {i.ConceptNameCodeSequence[0].CodeValue: i.ConceptCodeSequence[0].CodeValue
             for i in items if i.ValueType == "CODE"}
    assert coded["121071"] == "108369006"  # finding: Neoplasm
    assert coded["705057003"] == ("2667000" if verdict["label"] == "normal" else "52101004")  # Absent/Present
    assert coded["363698007"] == "12738006"  # finding site: Brain
    probability = [i for i in items if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "122157"]
    assert len(probability) == 1
    assert np.isclose(float(probability[0].MeasuredValueSequence[0].NumericValue), verdict["tumor_probability"])
    versions = [i.TextValue for i in items if i.ValueType == "TEXT" and
                i.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Version"]
    assert set(versions) == {verdict["models"][0]["version"]}
    driving = verdict["driving_slices"][0]["sop_instance_uid"]
    images = [i for i in items if i.ValueType == "IMAGE"]
    assert driving in {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images}

    sc = pydicom.dcmread(w.output / verdict["dicom_results"]["heatmap"])
    assert sc.SOPClassUID == SECONDARY_CAPTURE and sc.StudyInstanceUID == study
    assert sc.SeriesInstanceUID not in (uid, sr.SeriesInstanceUID)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == driving
    assert sc.PhotometricInterpretation == "RGB" and sc.pixel_array.shape[2] == 3
