//! The `fast-walsh-transform` plugin: [`passage_suite::fast_walsh_transform::FastWalshTransform`] through the plugin contract.

passage_suite_guest::suite_plugin!(passage_suite::fast_walsh_transform::FastWalshTransform);
