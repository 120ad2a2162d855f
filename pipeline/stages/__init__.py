"""The run's stages, in order. Adding a stage is one new module here and one line in `STAGES`
(docs/design.md, "Adding a stage" walks through one)."""
from pipeline.stages.alone import AloneStage
from pipeline.stages.benchmark import BenchmarkStage
from pipeline.stages.client_check import ClientCheckStage
from pipeline.stages.convert import ConvertStage
from pipeline.stages.metadata import MetadataStage
from pipeline.stages.package import PackageStage
from pipeline.stages.ptq_baseline import PtqBaselineStage
from pipeline.stages.qat import QatStage
from pipeline.stages.quantization_report import QuantizationReportStage
from pipeline.stages.slim import SlimStage
from pipeline.stages.sparsify import SparsifyStage
from pipeline.stages.teacher import TeacherStage
from pipeline.stages.train import TrainStage

STAGES = (
    TeacherStage(),
    TrainStage(),
    AloneStage(),
    SparsifyStage(),
    SlimStage(),
    PtqBaselineStage(),
    QatStage(),
    ConvertStage(),
    QuantizationReportStage(),
    MetadataStage(),
    ClientCheckStage(),
    BenchmarkStage(),
    PackageStage(),
)
