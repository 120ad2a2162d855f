import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
}

android {
    namespace = "org.mobilecnn.demo"
    compileSdk = 36

    defaultConfig {
        applicationId = "org.mobilecnn.demo"
        // MediaPipe Tasks needs API 24 (CameraX 1.5 needs 23).
        minSdk = 24
        targetSdk = 36
        versionCode = 1
        versionName = "1.0"
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    // MediaPipe memory-maps the model straight out of the APK (BaseOptions.setModelAssetPath), which works only
    // for an uncompressed entry.
    androidResources {
        noCompress += "tflite"
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    implementation(libs.androidx.core.ktx)
    implementation(libs.androidx.activity.ktx)
    implementation(libs.bundles.camerax)
    // The classifier: MediaPipe Tasks reads each model's TFLite Model Metadata (normalization, labels) and does
    // the image preprocessing, (de)quantization and top-k itself.
    implementation(libs.mediapipe.tasks.vision)

    // The app-specific logic (org.mobilecnn.demo.logic) has no Android dependency: plain JVM JUnit 4 tests.
    testImplementation(libs.junit)

    androidTestImplementation(libs.androidx.test.ext.junit)
    androidTestImplementation(libs.androidx.test.runner)
}
