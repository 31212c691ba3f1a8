//! The `bandwidth-test` plugin: [`passage_suite::bandwidth_test::BandwidthTest`] through the plugin contract.

passage_suite_guest::suite_plugin!(passage_suite::bandwidth_test::BandwidthTest);
