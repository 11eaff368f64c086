from streams.settings import Settings


def test_an_elasticsearch_url_is_printed_without_its_credentials():
    settings = Settings(elasticsearch_url="https://elastic:s3cret@es.example:9243/base")
    assert settings.elasticsearch_address == "https://es.example:9243/base"
    assert "s3cret" not in settings.elasticsearch_address
    assert Settings(elasticsearch_url="http://[::1]:9200").elasticsearch_address == \
        "http://[::1]:9200"
    assert Settings(elasticsearch_url="http://u:p@[::1]:9200").elasticsearch_address == \
        "http://[::1]:9200"
