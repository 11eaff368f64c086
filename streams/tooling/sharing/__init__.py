"""What a team shares and reports from the indices analysts use: a STIX 2.1 bundle of its
campaigns and attacks for peers (`stix`), and a transparency report (`figures` computes, `report`
draws and writes). `indexed` is the one reader of Elasticsearch; the rest is pure."""
