//! The `aligned-types` plugin: [`passage_suite::aligned_types::AlignedTypes`] through the plugin contract.

passage_suite_guest::suite_plugin!(passage_suite::aligned_types::AlignedTypes);
