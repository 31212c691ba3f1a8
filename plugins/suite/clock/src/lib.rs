//! The `clock` plugin: [`passage_suite::clock::Clock`] through the plugin contract.

passage_suite_guest::suite_plugin!(passage_suite::clock::Clock);
