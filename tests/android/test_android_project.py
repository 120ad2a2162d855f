"""android_demo/: what can be checked without an Android SDK — the Gradle files, version catalog and manifest refer to
things that exist, the versions meet the platform's requirements, the app leaves preprocessing and postprocessing to
MediaPipe, and it agrees with export/ on where models go and what the instrumented test reads. (Building the APK
needs the SDK: BUILD.md.)"""
import re
import tomllib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from export import android as packaging

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "android_demo"
APP = PROJECT / "app"
MAIN = APP / "src/main"
ANDROID = "{http://schemas.android.com/apk/res/android}"
# The minimum Gradle version of each Android Gradle Plugin line (developer.android.com, AGP release notes).
MIN_GRADLE_FOR_AGP = {"8.7": "8.9", "8.8": "8.10.2", "8.9": "8.11.1", "8.10": "8.11.1", "8.11": "8.13", "8.12": "8.13",
                      "8.13": "8.13"}
# 16 KB-page-aligned native libraries from MediaPipe Tasks 0.10.26 on (Google Play requires them for Android 15+
# targets).
MIN_MEDIAPIPE_TASKS = (0, 10, 26)
# What MediaPipe's ImageClassifier now does, and the app must not do again by hand.
CLIENT_WORK = re.compile(r"softmax|zero_?point|dequantiz|\bnormaliz(?:e|es|ation|ing)\b|org\.tensorflow\.lite"
                         r"|model_meta\.json|labels\.txt", re.I)


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.match(r"\d+(\.\d+)*", text).group(0).split("."))


@pytest.fixture(scope="module")
def catalog() -> dict:
    with open(PROJECT / "gradle/libs.versions.toml", "rb") as handle:
        return tomllib.load(handle)


@pytest.fixture(scope="module")
def app_gradle() -> str:
    return (APP / "build.gradle.kts").read_text()


@pytest.fixture(scope="module")
def manifest() -> ElementTree.Element:
    return ElementTree.parse(MAIN / "AndroidManifest.xml").getroot()


def _gradle_int(app_gradle: str, name: str) -> int:
    found = re.search(rf"^\s*{name}\s*=\s*(\d+)\s*$", app_gradle, re.M)
    assert found, f"app/build.gradle.kts sets no {name}"
    return int(found.group(1))


def _namespace(app_gradle: str) -> str:
    return re.search(r'^\s*namespace\s*=\s*"([\w.]+)"', app_gradle, re.M).group(1)


def test_standard_project_layout():
    for path in ("settings.gradle.kts", "build.gradle.kts", "gradle.properties", "gradle/libs.versions.toml",
                 "gradle/wrapper/gradle-wrapper.properties", "app/build.gradle.kts", "app/src/main/AndroidManifest.xml"):
        assert (PROJECT / path).is_file(), path
    assert (MAIN / "assets").is_dir(), "export.android packages into app/src/main/assets/"
    assert re.search(r'include\(":app"\)', (PROJECT / "settings.gradle.kts").read_text())


def test_gradle_wrapper_pins_a_gradle_the_android_plugin_accepts(catalog):
    properties = (PROJECT / "gradle/wrapper/gradle-wrapper.properties").read_text()
    found = re.search(r"^distributionUrl=.*/gradle-([\d.]+)-(bin|all)\.zip$", properties, re.M)
    assert found, "distributionUrl must pin one Gradle release"
    agp = catalog["versions"]["agp"]
    agp_line = ".".join(agp.split(".")[:2])
    assert agp_line in MIN_GRADLE_FOR_AGP, f"AGP {agp}: add its minimum Gradle version to this test's table"
    assert version(found.group(1)) >= version(MIN_GRADLE_FOR_AGP[agp_line])
    if not (PROJECT / "gradle/wrapper/gradle-wrapper.jar").exists():
        # No wrapper binary is committed; BUILD.md must say how to get one.
        assert "gradle wrapper" in (REPO / "BUILD.md").read_text()


def test_catalog_has_mediapipe_tasks_with_16kb_pages_and_camerax(catalog):
    libraries = catalog["libraries"]

    def coordinates(alias):
        entry = libraries[alias]
        group, name = (entry["module"].split(":") if "module" in entry else (entry["group"], entry["name"]))
        return group, name, catalog["versions"][entry["version"]["ref"]]

    tasks = [coordinates(alias) for alias in libraries if coordinates(alias)[:2] == ("com.google.mediapipe",
                                                                                   "tasks-vision")]
    assert len(tasks) == 1, "the app classifies with com.google.mediapipe:tasks-vision"
    assert version(tasks[0][2]) >= MIN_MEDIAPIPE_TASKS, f"tasks-vision {tasks[0][2]} predates 16 KB-aligned libraries"
    assert not [alias for alias in libraries if coordinates(alias)[0] == "com.google.ai.edge.litert"], \
        "MediaPipe brings its own runtime; a second LiteRT would only add a second copy of the native libraries"
    camerax = {coordinates(alias)[1] for alias in libraries if coordinates(alias)[0] == "androidx.camera"}
    assert {"camera-core", "camera-camera2", "camera-lifecycle", "camera-view"} <= camerax
    assert {"android-application", "kotlin-android"} <= set(catalog["plugins"])


def test_every_catalog_reference_in_the_build_files_exists(catalog):
    def accessor(alias: str) -> str:
        return re.sub(r"[-_.]", ".", alias)

    known = {f"libs.{accessor(a)}" for a in catalog["libraries"]}
    known |= {f"libs.bundles.{accessor(a)}" for a in catalog.get("bundles", {})}
    known |= {f"libs.plugins.{accessor(a)}" for a in catalog["plugins"]}
    for bundle, members in catalog.get("bundles", {}).items():
        assert set(members) <= set(catalog["libraries"]), f"bundle {bundle} names unknown libraries"
    for build_file in (PROJECT / "build.gradle.kts", APP / "build.gradle.kts"):
        code = re.sub(r"//[^\n]*", "", build_file.read_text())
        references = set(re.findall(r"\blibs\.[\w.]+", code))
        assert references, build_file
        assert references <= known, f"{build_file.name}: unknown catalog entries {sorted(references - known)}"


def test_app_build_settings(app_gradle):
    min_sdk, target_sdk, compile_sdk = (_gradle_int(app_gradle, name) for name in ("minSdk", "targetSdk", "compileSdk"))
    assert 21 <= min_sdk <= target_sdk <= compile_sdk
    assert target_sdk >= 35, "target Android 15+: the 16 KB page requirement and NNAPI's deprecation apply there"
    # MediaPipe memory-maps the model out of the APK, which needs the entry stored uncompressed.
    assert re.search(r'androidResources\s*\{[^}]*noCompress\s*\+=\s*"tflite"', app_gradle, re.S)
    assert "libs.mediapipe.tasks.vision" in app_gradle and "libs.bundles.camerax" in app_gradle
    assert 'testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"' in app_gradle
    assert "testImplementation(libs.junit)" in app_gradle


def test_manifest_permission_and_activities(manifest, app_gradle):
    permissions = {element.get(f"{ANDROID}name") for element in manifest.iter("uses-permission")}
    assert "android.permission.CAMERA" in permissions
    application = manifest.find("application")
    activities = application.findall("activity")
    assert activities
    namespace = _namespace(app_gradle)
    launchers = 0
    for activity in activities:
        name = activity.get(f"{ANDROID}name")
        qualified = namespace + name if name.startswith(".") else name
        source = MAIN / "java" / (qualified.replace(".", "/") + ".kt")
        assert source.is_file(), f"manifest activity {name}: {source} is missing"
        assert re.search(rf"^class {qualified.rsplit('.', 1)[1]}\b", source.read_text(), re.M)
        actions = {a.get(f"{ANDROID}name") for a in activity.iter("action")}
        if "android.intent.action.MAIN" in actions:
            launchers += 1
            assert activity.get(f"{ANDROID}exported") == "true", "a launcher activity must be exported (API 31+)"
    assert launchers == 1
    strings = _resource_names("string")
    for value in re.findall(r'"@string/(\w+)"', (MAIN / "AndroidManifest.xml").read_text()):
        assert value in strings


def _resource_names(kind: str) -> set[str]:
    names = set()
    for values in (MAIN / "res").glob("values*/*.xml"):
        names |= {element.get("name") for element in ElementTree.parse(values).getroot().iter(kind)}
    return names


def test_kotlin_sources_match_their_packages_and_resources():
    ids = set()
    for layout in (MAIN / "res/layout").glob("*.xml"):
        ids |= set(re.findall(r'android:id="@\+id/(\w+)"', layout.read_text()))
    layouts = {path.stem for path in (MAIN / "res/layout").glob("*.xml")}
    resources = {"id": ids, "layout": layouts, "string": _resource_names("string"), "color": _resource_names("color")}
    sources = list((APP / "src").rglob("*.kt"))
    assert len(sources) >= 8
    for source in sources:
        text = source.read_text()
        package = re.search(r"^package\s+([\w.]+)", text, re.M).group(1)
        assert source.parent.as_posix().endswith(package.replace(".", "/")), f"{source}: package {package}"
        for kind, name in re.findall(r"(?<![\w.])R\.(id|layout|string|color)\.(\w+)", text):  # not android.R
            assert name in resources[kind], f"{source.name}: R.{kind}.{name} does not exist"


def test_pure_logic_has_no_android_dependency():
    """What the JVM unit tests cover must compile without the Android SDK, MediaPipe, or org.json (Android's)."""
    logic = list((MAIN / "java/org/mobilecnn/demo/logic").glob("*.kt"))
    assert logic
    for source in logic:
        imports = re.findall(r"^import\s+([\w.]+)", source.read_text(), re.M)
        bad = [name for name in imports if name.startswith(("android.", "androidx.", "org.json", "org.tensorflow",
                                                            "com.google.mediapipe"))]
        assert not bad, f"{source.name} imports {bad}"


def test_the_app_leaves_preprocessing_and_postprocessing_to_mediapipe():
    """Resize, normalize, (de)quantize, softmax, top-k and the labels come from MediaPipe and the model's metadata."""
    main_sources = list((MAIN / "java").rglob("*.kt"))
    for source in main_sources:
        code = re.sub(r"/\*.*?\*/|//[^\n]*", "", source.read_text(), flags=re.S)  # comments may say what MediaPipe does
        found = CLIENT_WORK.search(code)
        assert not found, f"{source.name} mentions {found.group(0)!r}: that is MediaPipe's job now"
    classifier = (MAIN / "java/org/mobilecnn/demo/LiveClassifier.kt").read_text()
    assert "ImageClassifier.createFromOptions" in classifier and "RunningMode.LIVE_STREAM" in classifier
    assert "setResultListener" in classifier and "classifyAsync" in classifier
    assert "Delegate.GPU" in classifier and "Delegate.CPU" in classifier
    assert not list((MAIN / "java").rglob("Json.kt")), "the hand-written JSON parser is gone"


def test_the_app_reads_what_export_writes():
    catalog_kt = (MAIN / "java/org/mobilecnn/demo/logic/ModelCatalog.kt").read_text()
    assert f'const val MODEL_SUFFIX = "{packaging.MODEL_SUFFIX}"' in catalog_kt
    assert packaging.MAIN_ASSETS.as_posix() == "app/src/main/assets"
    assert packaging.TEST_ASSETS.as_posix() == "app/src/androidTest/assets"
    instrumented = (APP / "src/androidTest/java/org/mobilecnn/demo/BundledImageClassificationTest.kt").read_text()
    assert f'"{packaging.SAMPLE_EXPECTED}"' in instrumented
    export_source = Path(packaging.__file__).read_text()
    keys = set(re.findall(r'\bget(?:String|Double|Int)\("(\w+)"\)', instrumented))
    assert keys >= {"image", "model_asset", "top1_label", "top1_score", "score_tolerance"}
    for key in keys:
        assert re.search(rf'"{key}"|\b{key}=', export_source), f"export/android.py writes no {key!r}"


def test_build_md_has_the_section_error_messages_point_to():
    build_md = (REPO / "BUILD.md").read_text()
    assert re.search(r"^#+ Getting benchmark_model onto a device\s*$", build_md, re.M)
    assert "installDebug" in build_md and "connectedDebugAndroidTest" in build_md
    # Said plainly where a reader looks: no APK has been built here.
    not_built = re.compile(r"no APK has been built|APK has not been built", re.I)
    assert not_built.search(build_md)
    readme = (REPO / "README.md").read_text()
    app_section = readme[readme.index("## The Android app"):]
    assert not_built.search(app_section) and "MediaPipe" in app_section
