//! The `convolution-separable` plugin: [`passage_suite::convolution_separable::ConvolutionSeparable`] through the plugin contract.

passage_suite_guest::suite_plugin!(passage_suite::convolution_separable::ConvolutionSeparable);
