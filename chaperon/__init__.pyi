# What type checkers see of ``chaperon``: the names __init__.py loads on first use.
from chaperon._version import __version__ as __version__
from chaperon.builder import LoadTest as LoadTest
from chaperon.builder import Scenario as Scenario
from chaperon.builder import header as header
from chaperon.builder import json_path as json_path
from chaperon.builder import regex as regex
from chaperon.builder import response_body as response_body
from chaperon.builder import status_code as status_code
from chaperon.client import Client as Client
from chaperon.core.files import load_file as load_file
from chaperon.core.loadtest import LoadTestFileError as LoadTestFileError
from chaperon.core.loadtest import load_test_from_dict as load_test_from_dict
from chaperon.exporters import default_path as default_path
from chaperon.exporters import export as export
from chaperon.exporters import to_csv as to_csv
from chaperon.exporters import to_html as to_html
from chaperon.exporters import to_json as to_json
from chaperon.report import format_report as format_report

__all__: list[str]
