"""DICOM results for PACS (highdicom): a Comprehensive 3D SR per series verdict, and a secondary
capture of the heat map of the slice that drove it.

The SR is a TID 1500 Measurement Report: one measurement group (TID 1501) with the finding as a
finding type SNOMED CT Neoplasm, its Presence (Present or Absent) as
a qualitative evaluation (a finer tumor class as a second one, in the local scheme 99TUMORD), the series tumor probability (DCM 122157 Probability, UCUM "1"), the algorithm (tumord,
the model version and its weights' SHA-256), finding site Brain, and the driving slices as source
images. Both objects join the source study (patient and study modules copied from the archived
instances, which is what makes a PACS file them with the study) in series of their own. Their UIDs
are derived from the source series UID and the verdict's revision, so a series completed again
after a crash produces the same objects, which a PACS stores once.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tumord import __version__
from tumord.atomic import write_atomic

MANUFACTURER = "tumord"
LOCAL_SCHEME = "99TUMORD"
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def evaluations(label: str, negative: bool) -> list:
    """Presence of a neoplasm (SNOMED CT), and for a finer tumor class, that class (local scheme)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    presence = Code("705057003", "SCT", "Presence")
    out = [hd.sr.QualitativeEvaluation(name=presence, value=codes.SCT.Absent if negative else codes.SCT.Present)]
    if not negative and label not in ("tumor", "yes"):
        out.append(hd.sr.QualitativeEvaluation(name=Code("class", LOCAL_SCHEME, "tumord class"),
                                               value=Code(label, LOCAL_SCHEME, label)))
    return out


def build_sr(verdict: dict, evidence: list, driving: list[tuple[str, str, int]]):
    """The SR dataset; `driving` lists (SOP class UID, SOP instance UID, frame) of the driving slices."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    model = verdict["models"][-1]
    algorithm = hd.sr.AlgorithmIdentification(name="tumord", version=model["version"],
                                              parameters=[f"weights_sha256={model['sha256']}",
                                                          f"rule={verdict['rule']['name']}"])
    negative = verdict["tumor_probability"] is not None and verdict["tumor_probability"] < 0.5
    measurements = []
    if verdict["tumor_probability"] is not None:
        measurements.append(hd.sr.Measurement(
            name=codes.DCM.Probability, value=float(verdict["tumor_probability"]), unit=codes.UCUM.NoUnits,
            algorithm_id=algorithm, qualifier=None))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid(verdict["series_instance_uid"], "tracking"),
                                                     identifier="tumord series verdict"),
        algorithm_id=algorithm,
        finding_type=codes.SCT.Neoplasm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Brain)],
        measurements=measurements or None,
        qualitative_evaluations=evaluations(verdict["label"], negative),
        source_images=[hd.sr.SourceImageForMeasurementGroup(cls, sop, [frame]) for cls, sop, frame in driving],
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid("tumord-device", model["sha256"]), name="tumord", manufacturer_name=MANUFACTURER,
            model_name=model["version"]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.BrainMRI, imaging_measurements=[group],
        title=codes.DCM.ImagingMeasurementReport)
    revision = verdict["revision"]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0],
        series_instance_uid=_uid(verdict["series_instance_uid"], "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=_uid(verdict["series_instance_uid"], "sr", revision), instance_number=revision,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription, sr.SoftwareVersions = "tumord AI result (not verified)", __version__
    return sr


def build_heatmap(verdict: dict, source, heatmap_png: bytes):
    """A secondary capture of the heat map (RGB), in the source study, referencing the source slice."""
    import highdicom as hd
    from pydicom.dataset import Dataset

    bgr = cv2.imdecode(np.frombuffer(heatmap_png, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("the heat-map PNG could not be decoded")
    revision = verdict["revision"]
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", patient_orientation=("L", "P"),
        series_instance_uid=_uid(verdict["series_instance_uid"], "sc-series"), series_number=SC_SERIES_NUMBER,
        sop_instance_uid=_uid(verdict["series_instance_uid"], "sc", revision), instance_number=revision,
        manufacturer=MANUFACTURER, transfer_syntax_uid="1.2.840.10008.1.2.1")
    sc.SeriesDescription, sc.SoftwareVersions = "tumord heat map (not for diagnosis)", __version__
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    return sc


def _encoded(ds) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class ResultWriter:
    """Called by the series tracker with a series verdict and its instances; returns what it wrote."""

    def __init__(self, folder: Path, output: Path):
        self.folder, self.output = Path(folder), Path(output)

    def __call__(self, verdict: dict, instances) -> dict:
        import pydicom

        from tumord.service.series import safe_uid

        by_sop, evidence = {}, []
        for inst in instances:
            if inst.archived and inst.sop not in by_sop and Path(inst.archived).exists():
                by_sop[inst.sop] = pydicom.dcmread(inst.archived, stop_before_pixels=True)
                evidence.append(by_sop[inst.sop])
        if not evidence:
            return {"error": "no archived source instance left to reference"}
        driving = [(by_sop[d["sop_instance_uid"]].SOPClassUID, d["sop_instance_uid"], d["frame"])
                   for d in verdict["driving_slices"] if d["sop_instance_uid"] in by_sop]
        self.folder.mkdir(parents=True, exist_ok=True)
        name = safe_uid(verdict["series_instance_uid"])
        written = {}
        sr = build_sr(verdict, evidence, driving)
        write_atomic(self.folder / f"{name}.sr.dcm", _encoded(sr))
        written["sr"] = f"dicom/{name}.sr.dcm"
        first = verdict["driving_slices"][0] if verdict["driving_slices"] else None
        source = next((i for i in instances if first and i.sop == first["sop_instance_uid"]), None)
        if source is not None and source.explanation and source.sop in by_sop:
            png = (self.output / source.explanation).read_bytes()
            write_atomic(self.folder / f"{name}.heatmap.dcm", _encoded(build_heatmap(verdict, by_sop[source.sop], png)))
            written["heatmap"] = f"dicom/{name}.heatmap.dcm"
        return written
