package org.apache.kafka.common.utils;

/**
 * Compatibility shim, packaged alone as conflux-jvm-apps-connect-file-compat.jar and put on the
 * Connect worker's CLASSPATH by the test (never in the distribution folder's libs/).
 *
 * <p>Maven Central has no org.apache.kafka:connect-file 4.4.0 (its newest is 4.3.1). The 4.3.1
 * FileStream connectors answer {@code version()} with this class, which kafka-clients 4.4 moved to
 * {@code org.apache.kafka.common.utils.internals.AppInfoParser}; everything else they use is
 * unchanged in 4.4.0. Connect's plugin class loader delegates {@code org.apache.kafka.common.*}
 * to the worker's class path, so this one class there lets the 4.3.1 connectors run on the 4.4.0
 * runtime unchanged. Remove it once connect-file 4.4.0 is on Maven Central.
 */
public final class AppInfoParser {
    private AppInfoParser() {
    }

    public static String getVersion() {
        return org.apache.kafka.common.utils.internals.AppInfoParser.getVersion();
    }

    public static String getCommitId() {
        return org.apache.kafka.common.utils.internals.AppInfoParser.getCommitId();
    }
}
