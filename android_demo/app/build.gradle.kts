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
        // CameraX and LiteRT 1.4 both support API 21+; 24 keeps the build free of legacy multidex/desugaring work.
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

    // The model is memory-mapped straight out of the APK (AssetManager.openFd), which works only for an
    // uncompressed entry.
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
    implementation(libs.bundles.litert)

    // The pure logic (org.mobilecnn.demo.logic) has no Android dependency, so its tests are plain JVM JUnit 4.
    testImplementation(libs.junit)

    androidTestImplementation(libs.androidx.test.ext.junit)
    androidTestImplementation(libs.androidx.test.runner)
}
